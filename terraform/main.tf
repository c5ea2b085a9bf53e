# Names and tags, built once. docs/contracts.md lists these names; the local pipeline
# (scripts/local_pipeline.py) and the contract tests read them from this file with
# python-hcl2, so they stay plain interpolations of var.name and other locals.

data "aws_caller_identity" "this" {}

data "aws_partition" "this" {}

locals {
  name = var.name

  repository_name = "${local.name}-trainer"
  cluster_name    = local.name
  task_family     = "${local.name}-trainer"
  container_name  = "trainer"
  function_name   = "${local.name}-trigger"

  artifacts_bucket_default = "${local.name}-artifacts-${local.account_id}-${var.region}"
  artifacts_bucket_name    = coalesce(var.artifacts_bucket_name, local.artifacts_bucket_default)

  # Stack roles live under their own IAM path so that the CI apply role (terraform/bootstrap)
  # can manage them, and only them.
  iam_path = "/${local.name}/"
  # Created by terraform/bootstrap; caps every role below (see bootstrap/iam.tf, "stack_boundary").
  permissions_boundary_arn = "arn:${local.partition}:iam::${local.account_id}:policy${local.iam_path}${local.name}-stack-boundary"

  # The CI roles terraform/bootstrap creates ("<name>-github-<use>", no path). Named, not looked up:
  # the stack must plan without them (permissions_boundary = false), and a name in a condition needs
  # no role to exist.
  ci_role_arn_prefix = "arn:${local.partition}:iam::${local.account_id}:role/${local.name}-github-"

  # Who may read or write runs/ and models/ at all (the bucket policy denies everyone else): the
  # trainer's task role, the trigger, the retrain workflow's role (reads), and var.artifacts_readers.
  artifacts_principal_arns = concat(
    [aws_iam_role.task.arn, aws_iam_role.trigger.arn, "${local.ci_role_arn_prefix}retrain"],
    var.artifacts_readers,
  )

  trainer_log_group = "/ecs/${local.task_family}"
  trigger_log_group = "/aws/lambda/${local.function_name}"

  # The scratch volume the trainer writes its dataset copy and checkpoints to (the root
  # filesystem is read-only).
  scratch_path = "/scratch"

  # The base task definition's environment: what every run of the trainer shares.
  # Per-run values (TRAINER_RUN_ID, TRAINER_ATTEMPT, TRAINER_IMAGE_DIGEST, TRAINER_GIT_SHA and
  # the requested parameters) arrive as RunTask container overrides from the trigger.
  trainer_environment = {
    TRAINER_DATA_URI       = "s3://${local.artifacts_bucket_name}/datasets/cifar-10-python.tar.gz"
    TRAINER_STORE_URI      = "s3://${local.artifacts_bucket_name}"
    TRAINER_WORK_DIR       = local.scratch_path
    TRAINER_MODEL_NAME     = var.model_name
    TRAINER_ACCURACY_FLOOR = tostring(var.accuracy_floor)
  }

  account_id = data.aws_caller_identity.this.account_id
  partition  = data.aws_partition.this.partition

  private_network = var.network_mode == "private"

  # Our tags win over var.tags: the CI apply role finds the stack's KMS key by its Project tag.
  tags = merge(var.tags, {
    Project   = local.name
    ManagedBy = "terraform"
    Stack     = "pushtrain"
  })
}
