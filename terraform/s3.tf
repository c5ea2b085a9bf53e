# The artifacts bucket: datasets/, runs/<run_id>/ (checkpoints, run records) and
# models/<model_name>/ (published versions, champion pointer). Layout: docs/contracts.md.

resource "aws_s3_bucket" "this" {
  # checkov:skip=CKV_AWS_144: cross-region replication doubles storage cost; every model can be retrained from its manifest.
  # checkov:skip=CKV_AWS_18: server access logs would need a second bucket; CloudTrail data events are the audit path when needed.
  # checkov:skip=CKV2_AWS_62: nothing consumes object-created notifications; the trigger is driven by ECR and ECS events.
  bucket        = local.artifacts_bucket_name
  force_destroy = var.destroy_with_data
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    # The AWS-managed aws/s3 key: no key charge, and the bucket key keeps KMS request costs near zero.
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.artifacts_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.this]
}

data "aws_iam_policy_document" "artifacts_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    # Defence in depth behind the roles' own policies: a role created outside the stack (or one the CI
    # apply role could create within the boundary) reads and writes no run, model, sweep or trained-digest
    # entry, whatever its IAM policy says. Deletes stay with IAM, so an administrator can still empty the bucket to destroy.
    sid    = "DenyRunsAndModelsToUnnamedPrincipals"
    effect = "Deny"
    actions = [
      "s3:GetObject",
      "s3:GetObjectAttributes",
      "s3:GetObjectVersion",
      "s3:GetObjectVersionAttributes",
      "s3:PutObject",
    ]
    resources = [
      "${aws_s3_bucket.this.arn}/runs/*",
      "${aws_s3_bucket.this.arn}/models/*",
      "${aws_s3_bucket.this.arn}/sweeps/*",  # a sweep's record and its runs' validation counts: what it selects on
      "${aws_s3_bucket.this.arn}/digests/*", # which images have trained: a forged entry would skip a push
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "ArnNotEquals"
      variable = "aws:PrincipalArn"
      values   = local.artifacts_principal_arns
    }
  }

  statement {
    # Published versions are create-only (models/<model>/<version>/<file>): a PutObject there must
    # carry If-None-Match, so it can never overwrite (S3 user guide, "Enforce conditional writes on
    # Amazon S3 buckets": condition keys s3:if-none-match and s3:if-match). The trainer writes each file
    # with one PutObject; a multipart upload, whose parts carry no condition header, is refused here.
    sid       = "PublishedVersionsAreCreateOnly"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/models/*/*/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }
  }

  statement {
    # Every other write under models/ (the champion pointer) is conditional too: If-None-Match to create
    # it, If-Match on its ETag to swap it; an unconditional overwrite is refused.
    sid       = "ModelWritesAreConditional"
    effect    = "Deny"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/models/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Null"
      variable = "s3:if-none-match"
      values   = ["true"]
    }

    condition {
      test     = "Null"
      variable = "s3:if-match"
      values   = ["true"]
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    id     = "expire-run-checkpoints"
    status = "Enabled"

    # A finished run's checkpoint is dead weight (the model is under models/); an unfinished
    # one older than this will not be resumed.
    filter {
      prefix = "runs/"
    }

    expiration {
      days = var.checkpoint_expiration_days
    }
  }

  rule {
    id     = "expire-noncurrent-versions-and-uploads"
    status = "Enabled"

    # Every checkpoint write and champion swap leaves a noncurrent version behind.
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }

    # A delete marker with no versions left behind it is removed too.
    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}
