# The trigger: turns ECR pushes, Spot interruptions and retrain requests into RunTask calls.
# Its code is lambda/src/trigger, zipped by `python3 scripts/package_lambda.py` into
# build/trigger.zip (deterministic, so an unchanged tree never redeploys).

locals {
  lambda_zip_path = startswith(var.lambda_zip_path, "/") ? var.lambda_zip_path : "${path.module}/${var.lambda_zip_path}"
}

resource "aws_cloudwatch_log_group" "trigger" {
  # checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts at rest with service keys; the logs hold no secrets and a customer key adds cost and key-policy coupling.
  # checkov:skip=CKV_AWS_338: a year of trigger logs is not worth its storage; every decision is also in the run record in S3.
  name              = local.trigger_log_group
  retention_in_days = var.log_retention_days
}

resource "aws_lambda_function" "this" {
  # checkov:skip=CKV_AWS_117: the function calls only AWS APIs; inside a VPC it would need ECS, ECR, S3 and STS endpoints for nothing.
  # checkov:skip=CKV_AWS_116: async failures go to an on-failure destination (aws_lambda_function_event_invoke_config), which keeps the error and the event; a DLQ would keep only the event.
  # checkov:skip=CKV_AWS_173: the environment holds resource names, no secrets; the default service key encrypts it.
  # checkov:skip=CKV_AWS_272: code signing needs an AWS Signer profile per release; the zip is built reproducibly from this repository and deployed by the CI apply role only.
  # checkov:skip=CKV_AWS_50: X-Ray tracing would add the xray:Put* actions to a role held to exactly the calls the code makes; one structured log line per decision is the trace.
  function_name = local.function_name
  description   = "pushtrain trigger: ECR push / Spot interruption / retrain request -> ECS RunTask"
  role          = aws_iam_role.trigger.arn
  runtime       = "python3.12"
  handler       = var.lambda_handler
  architectures = ["arm64"] # 20% cheaper per GB-second than x86_64; the code is pure Python.
  memory_size   = 256
  timeout       = 60

  filename         = local.lambda_zip_path
  source_code_hash = filebase64sha256(local.lambda_zip_path)

  # No reservation by default (var.lambda_reserved_concurrency): a new account cannot reserve any.
  # A burst of pushes starts one task per digest, each exactly once (the run record is the lock), so
  # nothing needs the cap for correctness; the async queue holds what concurrency cannot take yet.
  # -1 is the provider's "no reservation".
  reserved_concurrent_executions = coalesce(var.lambda_reserved_concurrency, -1)

  logging_config {
    log_format            = "JSON"
    log_group             = aws_cloudwatch_log_group.trigger.name
    application_log_level = "INFO"
    system_log_level      = "WARN"
  }

  environment {
    variables = {
      PUSHTRAIN_CLUSTER          = aws_ecs_cluster.this.name
      PUSHTRAIN_TASK_FAMILY      = local.task_family
      PUSHTRAIN_CONTAINER_NAME   = local.container_name
      PUSHTRAIN_REPOSITORY_NAME  = aws_ecr_repository.this.name
      PUSHTRAIN_REPOSITORY_URI   = aws_ecr_repository.this.repository_url
      PUSHTRAIN_SUBNETS          = join(",", [for subnet in aws_subnet.this : subnet.id])
      PUSHTRAIN_SECURITY_GROUPS  = aws_security_group.tasks.id
      PUSHTRAIN_ASSIGN_PUBLIC_IP = local.private_network ? "DISABLED" : "ENABLED"
      PUSHTRAIN_BUCKET           = aws_s3_bucket.this.bucket
      PUSHTRAIN_MAX_ATTEMPTS     = tostring(var.max_attempts)
      PUSHTRAIN_MODEL_NAME       = var.model_name
      # Scale-out capacity (gpu.tf, batch.tf): empty when not deployed, and the trigger refuses
      # requests that need it.
      PUSHTRAIN_GPU_TASK_FAMILY       = local.gpu_enabled ? local.gpu_task_family : ""
      PUSHTRAIN_GPU_CAPACITY_PROVIDER = local.gpu_enabled ? local.gpu_provider_name : ""
      # "" with var.gpu.spot = false: the one GPU provider is on-demand already.
      PUSHTRAIN_GPU_ON_DEMAND_CAPACITY_PROVIDER = local.gpu_on_demand ? local.gpu_on_demand_name : ""
      PUSHTRAIN_DEFAULT_COMPUTE                 = var.default_compute
      PUSHTRAIN_BATCH_JOB_QUEUE                 = local.batch_enabled ? local.batch_queue_name : ""
      PUSHTRAIN_BATCH_JOB_DEFINITION            = local.batch_enabled ? local.batch_job_family : ""
      # More nodes than the compute environment holds would wait RUNNABLE: the trigger refuses them.
      PUSHTRAIN_BATCH_MAX_NODES = local.batch_enabled ? tostring(var.batch.max_nodes) : ""
      # A start claimed longer ago than this died with its invocation: 3 x the 60 s timeout above.
      PUSHTRAIN_CLAIM_SECONDS = "180"
      # Reconcile's look-back; runs/ expires later (checkpoint_expiration_days is at least 8).
      PUSHTRAIN_RECONCILE_LOOKBACK_DAYS = "7"
    }
  }

  # Pushes train on var.default_compute: GPU only where the GPU capacity exists.
  lifecycle {
    precondition {
      condition     = var.default_compute == "cpu" || local.gpu_enabled
      error_message = "default_compute = \"gpu\" needs the GPU capacity: set gpu = { enabled = true } (terraform/gpu.tf)."
    }
  }

  # The base task definition must exist before the first event arrives.
  # The cluster's capacity providers too: the trigger's RunTask names FARGATE_SPOT/FARGATE, which fail
  # on a cluster that does not have them yet.
  depends_on = [
    aws_iam_role_policy.trigger,
    aws_iam_role_policy.trigger_runtime,
    aws_ecs_task_definition.this,
    aws_ecs_cluster_capacity_providers.this,
  ]
}

resource "aws_lambda_function_event_invoke_config" "this" {
  function_name = aws_lambda_function.this.function_name

  # Two retries after the first failure (Lambda's maximum), then the event and the error go to the
  # failures queue, where an alarm notices them. The trigger is idempotent per run, so a retry
  # never starts a second task.
  maximum_retry_attempts       = 2
  maximum_event_age_in_seconds = 3600

  destination_config {
    on_failure {
      destination = aws_sqs_queue.trigger_failures.arn
    }
  }
}
