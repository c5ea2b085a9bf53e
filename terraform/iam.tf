# Three roles, each allowed only what its holder does:
#   execution  ECS pulls the image and ships logs for a training task
#   task       the trainer reads the dataset and writes runs/ and models/ in the artifacts bucket
#   trigger    the Lambda registers task definitions and runs tasks (exactly the calls its code makes)
# The contract tests (tests/test_terraform_contracts.py) compare these documents with the code.

locals {
  task_definition_family_arn = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.task_family}:*"
  # With var.gpu.enabled the trigger also pins and runs revisions of the GPU family (gpu.tf).
  trigger_task_definition_arns = concat(
    [local.task_definition_family_arn],
    local.gpu_enabled ? ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.gpu_task_family}:*"] : [],
  )
  cluster_tasks_arn = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task/${local.cluster_name}/*"
}

# --- execution role: image pull and logs ------------------------------------------------------

# A trust condition on a key the service does not send denies every assume, so conditions are set
# only where AWS documents them: the ECS task role (aws:SourceAccount / aws:SourceArn), below.
data "aws_iam_policy_document" "ecs_tasks_trust" {
  # iam-lint:skip=MALFORMED: a trust policy names no Resource (the role it is attached to is the resource); parliament reads every document as an identity policy.
  statement {
    sid     = "EcsTasksAssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name                 = "${local.name}-trainer-execution"
  path                 = local.iam_path
  description          = "ECS pulls the trainer image and writes its logs"
  assume_role_policy   = data.aws_iam_policy_document.ecs_tasks_trust.json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary ? local.permissions_boundary_arn : null
}

data "aws_iam_policy_document" "execution" {
  # iam-lint:skip=CREDENTIALS_EXPOSURE: ecr:GetAuthorizationToken is how ECS starts an image pull for the task; the token reaches only the repositories this role may pull.
  statement {
    # GetAuthorizationToken has no resource type: it can only be granted on "*".
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPullTrainerImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    sid       = "TrainerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.trainer.arn}:*"]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "pull-image-and-log"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

# --- task role: what the trainer does in S3 ---------------------------------------------------

data "aws_iam_policy_document" "task_trust" {
  # iam-lint:skip=MALFORMED: a trust policy names no Resource (the role it is attached to is the resource); parliament reads every document as an identity policy.
  statement {
    sid     = "EcsTasksOfThisAccount"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }

    # Confused-deputy guard from the ECS task role documentation: only this account's tasks.
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:*"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "task" {
  name                 = "${local.name}-trainer-task"
  path                 = local.iam_path
  description          = "The trainer: reads datasets/, reads and writes runs/ and models/ in the artifacts bucket"
  assume_role_policy   = data.aws_iam_policy_document.task_trust.json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary ? local.permissions_boundary_arn : null
}

data "aws_iam_policy_document" "task" {
  statement {
    # GetObject also covers HeadObject (exists checks) and conditional reads.
    # sweeps/: a sweep run reads the other runs' rung results (ASHA, trainer.asha) beside its own.
    sid     = "ReadArtifacts"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.this.arn}/datasets/*",
      "${aws_s3_bucket.this.arn}/runs/*",
      "${aws_s3_bucket.this.arn}/models/*",
      "${aws_s3_bucket.this.arn}/sweeps/*",
    ]
  }

  statement {
    # Conditional writes (If-None-Match for new versions, If-Match for the champion swap and the
    # run record) are plain PutObject calls; there is no delete: a published version is never removed.
    # sweeps/<id>/rungs/ and sweeps/<id>/final/: a sweep run's validation counts (trainer.asha, trainer.run).
    sid     = "WriteRunsAndModels"
    actions = ["s3:PutObject"]
    resources = [
      "${aws_s3_bucket.this.arn}/runs/*",
      "${aws_s3_bucket.this.arn}/models/*",
      "${aws_s3_bucket.this.arn}/sweeps/*",
    ]
  }

  statement {
    # Listing versions and runs, and the difference between "missing" and "forbidden": S3 answers a
    # read of a missing key (no checkpoint yet, no champion yet) with 404 only to a caller allowed
    # s3:ListBucket on the bucket, 403 otherwise. No s3:prefix condition: a GetObject carries no
    # prefix, so a conditional grant would still turn every first run's missing checkpoint into 403.
    # The bucket holds nothing but pushtrain's own datasets/, runs/ and models/.
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
  }

  statement {
    # One message per succeeded run (trainer/src/trainer/notify.py, TRAINER_NOTIFY_TOPIC_ARN).
    sid       = "NotifySucceededRuns"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]
  }

  statement {
    # The topic is encrypted with its own key: SNS asks KMS for a data key on the publisher's behalf.
    sid       = "EncryptNotifications"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.notifications.arn]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "artifacts"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

# --- trigger role: the Lambda -----------------------------------------------------------------

data "aws_iam_policy_document" "lambda_trust" {
  # iam-lint:skip=MALFORMED: a trust policy names no Resource (the role it is attached to is the resource); parliament reads every document as an identity policy.
  statement {
    sid     = "LambdaAssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "trigger" {
  name                 = local.function_name
  path                 = local.iam_path
  description          = "The trigger Lambda: registers trainer task definitions and runs them"
  assume_role_policy   = data.aws_iam_policy_document.lambda_trust.json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary ? local.permissions_boundary_arn : null
}

# Exactly the AWS calls lambda/src/trigger makes (tests/test_terraform_contracts.py reads the
# code's boto3 calls and compares).
data "aws_iam_policy_document" "trigger" {
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: iam:PassRole, for the execution and task roles only and only to ecs-tasks.amazonaws.com, is what RunTask and RegisterTaskDefinition need.
  # iam-lint:skip=RESOURCE_STAR(ecs:ListTasks): ECS's own policy examples scope ListTasks with the ecs:cluster condition on "*" (the reference names container-instance, which a Fargate-only cluster has none of).
  statement {
    # DescribeTaskDefinition has no resource type (IAM service authorization reference): "*" only.
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  statement {
    # RegisterTaskDefinition has one (task-definition, "task-definition/<family>:<revision>"): the
    # trainer family only (and its GPU family when deployed).
    sid       = "RegisterTrainerTaskDefinitions"
    actions   = ["ecs:RegisterTaskDefinition"]
    resources = local.trigger_task_definition_arns
  }

  statement {
    sid       = "RunTrainerTasks"
    actions   = ["ecs:RunTask"]
    resources = local.trigger_task_definition_arns

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    # RunTask with tags (run id, digest) and RegisterTaskDefinition with tags need TagResource
    # on the resource being created, and only as part of creating it.
    sid       = "TagOnCreate"
    actions   = ["ecs:TagResource"]
    resources = concat([local.cluster_tasks_arn], local.trigger_task_definition_arns)

    condition {
      test     = "StringEquals"
      variable = "ecs:CreateAction"
      values   = ["RunTask", "RegisterTaskDefinition"]
    }
  }

  statement {
    sid       = "PassTrainerRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    sid       = "ResolveImages"
    actions   = ["ecr:DescribeImages"]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    # Only runnable images train: the trigger reads a pushed manifest's media types before a run.
    sid       = "ReadImageManifests"
    actions   = ["ecr:BatchGetImage"]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    # A published run's image is kept: the trigger adds the tag keep-<run_id> to its digest (PutImage
    # with the manifest as stored: no layer is uploaded, and tags are immutable, so no image is replaced).
    sid       = "KeepPublishedImages"
    actions   = ["ecr:PutImage"]
    resources = [aws_ecr_repository.this.arn]
  }

  statement {
    # Before a second RunTask for a claimed start, the trigger looks for the task the first one may
    # have started (by startedBy); ListTasks has no resource of its own, the cluster condition scopes it.
    sid       = "FindRunTasks"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    # A stop event is acted on only once DescribeTasks confirms it; reconcile checks tasks it recorded.
    sid       = "DescribeRunTasks"
    actions   = ["ecs:DescribeTasks"]
    resources = [local.cluster_tasks_arn]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    sid       = "RunRecords"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/runs/*"]
  }

  statement {
    # Which digests a push has trained (trigger.trained): digests/<digest>.json, kept beyond runs/ (no
    # lifecycle rule expires it), so a re-tag of an image trained before its run record expired trains nothing.
    sid       = "TrainedDigests"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/digests/*"]
  }

  statement {
    # A sweep's record (trigger.sweep_flow): sweeps/<request_id>.json, and the trainers' validation counts
    # beside it (sweeps/<request_id>/final|rungs/...). Nothing under models/: a sweep selects on validation
    # counts, and the role cannot read a test metric (docs/contracts.md, Sweeps).
    sid       = "SweepRecords"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/sweeps/*"]
  }

  statement {
    # The trigger reads records that often do not exist yet (a digest's first push, reconcile). S3
    # answers a missing key with 404 only to a caller allowed s3:ListBucket on the bucket, and with
    # 403 otherwise, which the trigger must treat as an error. Reconcile also lists runs/ to repair runs.
    sid       = "TellMissingRecordsFromForbidden"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
  }
}

resource "aws_iam_role_policy" "trigger" {
  name   = "start-training"
  role   = aws_iam_role.trigger.id
  policy = data.aws_iam_policy_document.trigger.json
}

# What the Lambda service does with the role on the function's behalf, not the code: write the
# function's logs and deliver failed asynchronous events to the on-failure destination.
data "aws_iam_policy_document" "trigger_runtime" {
  statement {
    sid       = "FunctionLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.trigger.arn}:*"]
  }

  statement {
    sid       = "OnFailureDestination"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.trigger_failures.arn]
  }
}

resource "aws_iam_role_policy" "trigger_runtime" {
  name   = "runtime"
  role   = aws_iam_role.trigger.id
  policy = data.aws_iam_policy_document.trigger_runtime.json
}
