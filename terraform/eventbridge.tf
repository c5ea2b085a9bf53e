# Three rules on the default event bus. The patterns live in event-patterns/*.json.tftpl so that
# the local pipeline and the contract tests match events against exactly what is deployed.
#
# 1. ECR push SUCCESS of our repository -> trigger (train the pushed digest)
# 2. a training task stopped by a Fargate Spot interruption -> trigger (resume the same run)
# 3. a training task that failed (exit code not 0 and not 75 = interrupted, or never started) -> SNS,
#    and -> trigger (mark the run's record `failed`: a task that never started or was killed cannot)
# 4. a schedule -> trigger (reconcile: start the pushes of the last week whose event never arrived;
#    ECR delivers its events on a best-effort basis)

locals {
  # Every revision of the trainer family, the base one and those the trigger registers.
  task_definition_arn_prefix = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.task_family}:"

  event_patterns = {
    ecr_push = templatefile("${path.module}/event-patterns/ecr-push.json.tftpl", {
      repository_name = local.repository_name
    })
    spot_interruption = templatefile("${path.module}/event-patterns/spot-interruption.json.tftpl", {
      cluster_arn                = aws_ecs_cluster.this.arn
      task_definition_arn_prefix = local.task_definition_arn_prefix
    })
    training_failed = templatefile("${path.module}/event-patterns/training-failed.json.tftpl", {
      cluster_arn                = aws_ecs_cluster.this.arn
      task_definition_arn_prefix = local.task_definition_arn_prefix
      container_name             = local.container_name
    })
    # terraform/batch.tf (its rule exists only when var.batch.enabled)
    batch_job_failed = templatefile("${path.module}/event-patterns/batch-job-failed.json.tftpl", {
      job_queue_arn = "arn:${local.partition}:batch:${var.region}:${local.account_id}:job-queue/${local.batch_queue_name}"
    })
  }

  # EventBridge retries a failed delivery with backoff for up to a day by default; an ECR event
  # older than an hour is better found by reconcile than delivered late.
  event_retry = {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
}

# --- events that start training ---------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "ecr_push" {
  name          = "${local.name}-ecr-push"
  description   = "A successful image push to ${local.repository_name} starts a training run"
  event_pattern = local.event_patterns.ecr_push
}

resource "aws_cloudwatch_event_target" "ecr_push" {
  rule = aws_cloudwatch_event_rule.ecr_push.name
  arn  = aws_lambda_function.this.arn

  retry_policy {
    maximum_event_age_in_seconds = local.event_retry.maximum_event_age_in_seconds
    maximum_retry_attempts       = local.event_retry.maximum_retry_attempts
  }

  dead_letter_config {
    arn = aws_sqs_queue.events_dlq.arn
  }
}

resource "aws_cloudwatch_event_rule" "spot_interruption" {
  name          = "${local.name}-spot-interruption"
  description   = "A training task stopped by a Fargate Spot interruption is started again"
  event_pattern = local.event_patterns.spot_interruption
}

resource "aws_cloudwatch_event_target" "spot_interruption" {
  rule = aws_cloudwatch_event_rule.spot_interruption.name
  arn  = aws_lambda_function.this.arn

  retry_policy {
    maximum_event_age_in_seconds = local.event_retry.maximum_event_age_in_seconds
    maximum_retry_attempts       = local.event_retry.maximum_retry_attempts
  }

  dead_letter_config {
    arn = aws_sqs_queue.events_dlq.arn
  }
}

resource "aws_cloudwatch_event_rule" "reconcile" {
  name                = "${local.name}-reconcile"
  description         = "Periodically start training for pushed images whose push event was lost"
  schedule_expression = var.reconcile_schedule
}

resource "aws_cloudwatch_event_target" "reconcile" {
  rule = aws_cloudwatch_event_rule.reconcile.name
  arn  = aws_lambda_function.this.arn

  retry_policy {
    maximum_event_age_in_seconds = local.event_retry.maximum_event_age_in_seconds
    maximum_retry_attempts       = local.event_retry.maximum_retry_attempts
  }

  dead_letter_config {
    arn = aws_sqs_queue.events_dlq.arn
  }
}

resource "aws_lambda_permission" "events" {
  for_each = {
    ecr_push          = aws_cloudwatch_event_rule.ecr_push.arn
    spot_interruption = aws_cloudwatch_event_rule.spot_interruption.arn
    training_failed   = aws_cloudwatch_event_rule.training_failed.arn
    reconcile         = aws_cloudwatch_event_rule.reconcile.arn
  }

  statement_id  = "AllowEventBridge-${replace(each.key, "_", "-")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value
}

# --- events that notify -----------------------------------------------------------------------

resource "aws_cloudwatch_event_rule" "training_failed" {
  name          = "${local.name}-training-failed"
  description   = "A training task that failed or never started is reported to the notifications topic"
  event_pattern = local.event_patterns.training_failed
}

resource "aws_cloudwatch_event_target" "training_failed" {
  rule = aws_cloudwatch_event_rule.training_failed.name
  arn  = aws_sns_topic.this.arn

  input_transformer {
    input_paths = {
      task      = "$.detail.taskArn"
      stopCode  = "$.detail.stopCode"
      reason    = "$.detail.stoppedReason"
      exitCode  = "$.detail.containers[0].exitCode"
      startedBy = "$.detail.startedBy"
    }
    input_template = "\"pushtrain: training task <task> (started by <startedBy>) stopped: <stopCode>, exit code <exitCode>, reason: <reason>. The run record is under runs/ in the artifacts bucket.\""
  }

  retry_policy {
    maximum_event_age_in_seconds = local.event_retry.maximum_event_age_in_seconds
    maximum_retry_attempts       = local.event_retry.maximum_retry_attempts
  }

  dead_letter_config {
    arn = aws_sqs_queue.events_dlq.arn
  }
}

# The same rule also reaches the trigger, which records the run as `failed` (guarded on its attempt):
# a task that never started or was killed cannot write that itself, and a run left `queued`/`running`
# would make every later push of its digest a duplicate.
resource "aws_cloudwatch_event_target" "training_failed_trigger" {
  rule = aws_cloudwatch_event_rule.training_failed.name
  arn  = aws_lambda_function.this.arn

  retry_policy {
    maximum_event_age_in_seconds = local.event_retry.maximum_event_age_in_seconds
    maximum_retry_attempts       = local.event_retry.maximum_retry_attempts
  }

  dead_letter_config {
    arn = aws_sqs_queue.events_dlq.arn
  }
}
