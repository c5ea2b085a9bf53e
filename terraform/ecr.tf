# The trainer image repository. Tags are immutable: a tag (the git sha) names one image
# forever, and the trigger pins every run to the image digest anyway.

resource "aws_ecr_repository" "this" {
  # checkov:skip=CKV_AWS_136: AES256 is encryption at rest too (S3-managed keys, free); the AWS-managed aws/ecr key adds KMS grants that CreateRepository and DeleteRepository must create and retire, for no control the account would use.
  name                 = local.repository_name
  image_tag_mutability = "IMMUTABLE"
  force_delete         = var.destroy_with_data

  image_scanning_configuration {
    scan_on_push = true
  }

  # ECR's default: server-side encryption with S3-managed keys (AES-256), at no charge ("Encryption
  # at rest", ECR user guide). The KMS setting it replaces made ECR create grants on the aws/ecr key
  # at create and retire them at delete, which the CI apply role would need kms:CreateGrant and
  # kms:RetireGrant for; destroy failed without the latter. Encryption is fixed at creation: a
  # repository created with KMS is replaced by this change (see README, "Upgrading").
  encryption_configuration {
    encryption_type = "AES256"
  }
}

# What must stay pullable, and how each is kept (tests/test_terraform_contracts.py simulates this
# policy against a repository history):
#   - a digest a run record, a Spot resume, a reconcile or a retrain of a recent push can name: every
#     image younger than var.ecr_image_retention_days, which is at least the life of a run record
#     (var.checkpoint_expiration_days);
#   - a published model version's image, the champion's included, forever: when the run succeeds with
#     a version (its task's exit 0, rule training_succeeded, or reconcile), the trigger tags the index
#     it ran from "keep-<run_id>" and the n-th manifest that index lists "keep-<run_id>-<n>"
#     (lambda/src/trigger/keep.py, docs/contracts.md), and rule 1 never expires a "keep-" image. ECR's evaluation rules:
#     an image that matches the tag selection of a higher-priority rule cannot be expired by a
#     lower-priority one.
# A push of the trainer image is an OCI index (provenance and SBOM on) whose platform manifest and
# attestation manifests are untagged. ECR refuses to delete a manifest that an index in the
# repository references (BatchDeleteImage failure code ImageReferencedByManifestList), but its
# documentation does not say how lifecycle rules treat such children, so the policy does not rely on
# it: untagged images expire on the same age as tagged ones (one rule for both; children are pushed
# with their index),
# and the children of a published version carry their own keep- tag. No rule counts images: a count
# over "any" would count manifests (three per push) rather than pushes, and a count cannot promise
# that the digest of a live run record survives a burst of pushes.
#
# The limit of "forever": a lifecycle rule can only expire (there is no "retain" action), so rule 1 is
# a count, and a count has an end. It keeps the 9,999 youngest keep- images; a published version holds
# three (its index and two manifests), so the 3,334th published version makes the oldest version's
# images expire. Before a model registry reaches 3,333 versions, raise countNumber (the repository holds
# at most 100,000 images by default, ECR's "Images per repository" quota) or copy old versions' images
# to another repository. tests/test_terraform_ecr_lifecycle.py simulates that edge.
resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name

  policy = jsonencode({
    rules = [
      {
        rulePriority = 1
        description  = "Published model versions (tagged keep-*) never expire"
        selection = {
          tagStatus      = "tagged"
          tagPatternList = ["keep-*"]
          countType      = "imageCountMoreThan"
          countNumber    = 9999
        }
        action = { type = "expire" }
      },
      {
        # "any" must be the last rule; images rule 1 selected are out of its reach.
        rulePriority = 2
        description  = "Every other image, tagged or not (index children, interrupted pushes), expires ${var.ecr_image_retention_days} days after its push"
        selection = {
          tagStatus   = "any"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.ecr_image_retention_days
        }
        action = { type = "expire" }
      },
    ]
  })
}
