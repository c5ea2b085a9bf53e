# Five rules on the default event bus (six with var.batch.enabled, seven with GPU Spot capacity), one resource each through
# `for_each` over local.event_rules.
# The patterns live in event-patterns/*.json.tftpl so that the local pipeline and the contract tests
# match events against exactly what is deployed.
#
# 1. ecr_push           a tagged ECR push SUCCESS of our repository -> trigger (train the pushed digest)
# 2. spot_interruption  a training task stopped by a Spot interruption (Fargate Spot, or a GPU Spot
#                       instance's termination notice) -> trigger (resume the run)
# 3. training_failed    a training task that failed (exit code not 0, not 73 = a duplicate trainer
#                       that stood down, not 75 = interrupted; or never started) -> SNS, and -> trigger
#                       (mark the run's record `failed`: a task that never started or was killed cannot;
#                       a GPU Spot task that never started for lack of capacity resumes on on-demand)
# 4. training_succeeded a training task whose trainer exited 0 -> trigger (when its run record says
#                       succeeded with a version, tag the run's image keep-<run_id> so it never expires)
# 5. reconcile          a schedule -> trigger (start the pushes whose event never arrived, repair runs
#                       left in a non-final state, keep the images of published runs whose stop was
#                       missed; ECR delivers its events on a best-effort basis)
# 6. batch_job_failed   only with var.batch.enabled (batch.tf): a multi-node job of our queue that Batch
#                       gave up on -> trigger (mark its run `failed`: its trainer may never have run)
# 7. spot_notice        only with GPU Spot capacity (var.gpu.enabled and var.gpu.spot, gpu.tf): an EC2 Spot
#                       interruption warning or rebalance recommendation -> trigger (for an instance of
#                       our cluster: mark the runs of its training tasks and StopTask them; the trainer
#                       checkpoints and exits 75, and that stop, delivered by spot_interruption through
#                       the trigger's stop reason, resumes the run on the on-demand GPU provider)
#
# Every rule delivers to the trigger (aws_cloudwatch_event_target.trigger); training_failed also to
# the notifications topic (aws_cloudwatch_event_target.training_failed_notify).

locals {
  # Every revision of the trainer family, the base one and those the trigger registers, and with
  # var.gpu.enabled the same of the GPU family (gpu.tf). Each prefix ends in ":", so neither family's
  # prefix matches the other's revisions (pushtrain-trainer: is not a prefix of pushtrain-trainer-gpu:3).
  task_definition_arn_prefixes = concat(
    ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.task_family}:"],
    local.gpu_enabled ? ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/${local.gpu_task_family}:"] : [],
  )
  # The patterns' taskDefinitionArn value: a list of prefix matchers, any of which matches.
  task_definition_arn_patterns = jsonencode([for prefix in local.task_definition_arn_prefixes : { prefix = prefix }])
  # How every StopTask reason of the trigger's Spot notice handling starts (trigger.notices.STOP_REASON_PREFIX;
  # the contract test checks the two agree): ECS reports it as the task's stoppedReason, stopCode UserInitiated.
  notice_stop_reason_prefix = "pushtrain spot notice:"

  event_patterns = {
    ecr_push = templatefile("${path.module}/event-patterns/ecr-push.json.tftpl", {
      repository_name = local.repository_name
    })
    spot_interruption = templatefile("${path.module}/event-patterns/spot-interruption.json.tftpl", {
      cluster_arn                  = aws_ecs_cluster.this.arn
      task_definition_arn_patterns = local.task_definition_arn_patterns
      notice_stop_reason_prefix    = local.notice_stop_reason_prefix
    })
    training_failed = templatefile("${path.module}/event-patterns/training-failed.json.tftpl", {
      cluster_arn                  = aws_ecs_cluster.this.arn
      task_definition_arn_patterns = local.task_definition_arn_patterns
      container_name               = local.container_name
    })
    training_succeeded = templatefile("${path.module}/event-patterns/training-succeeded.json.tftpl", {
      cluster_arn                  = aws_ecs_cluster.this.arn
      task_definition_arn_patterns = local.task_definition_arn_patterns
      container_name               = local.container_name
    })
    # EC2 names only the instance: the trigger asks ECS whether it is one of our cluster's (trigger.notices)
    spot_notice = templatefile("${path.module}/event-patterns/spot-notice.json.tftpl", {})
    # terraform/batch.tf (its rule exists only when var.batch.enabled)
    batch_job_failed = templatefile("${path.module}/event-patterns/batch-job-failed.json.tftpl", {
      job_queue_arn = "arn:${local.partition}:batch:${var.region}:${local.account_id}:job-queue/${local.batch_queue_name}"
    })
  }

  # The rules: each has either an event pattern or a schedule. The key names the rule
  # ("<name>-<key with dashes>") and its FailedInvocations alarm.
  event_rules = merge({
    ecr_push = {
      description         = "A tagged image push to ${local.repository_name} starts a training run"
      event_pattern       = local.event_patterns.ecr_push
      schedule_expression = null
    }
    spot_interruption = {
      description         = "A training task stopped by a Spot interruption (or by the trigger on a Spot notice) is started again"
      event_pattern       = local.event_patterns.spot_interruption
      schedule_expression = null
    }
    training_failed = {
      description         = "A training task that failed or never started is reported and its run recorded failed"
      event_pattern       = local.event_patterns.training_failed
      schedule_expression = null
    }
    training_succeeded = {
      description         = "A training task that finished keeps its run's image when the run published a version"
      event_pattern       = local.event_patterns.training_succeeded
      schedule_expression = null
    }
    reconcile = {
      description         = "Periodically start pushes whose event was lost and repair runs left unfinished"
      event_pattern       = null
      schedule_expression = var.reconcile_schedule
    }
    }, {
    for key, rule in {
      batch_job_failed = {
        description         = "A multi-node training job on ${local.batch_queue_name} failed after its attempts"
        event_pattern       = local.event_patterns.batch_job_failed
        schedule_expression = null
      }
    } : key => rule if local.batch_enabled
    }, {
    # Every Spot notice of the account and region reaches the trigger (a rule cannot match an instance's
    # Auto Scaling group), so the rule exists only where a task of ours can run on Spot.
    for key, rule in {
      spot_notice = {
        description         = "An EC2 Spot warning or rebalance recommendation stops our GPU tasks on that instance gracefully"
        event_pattern       = local.event_patterns.spot_notice
        schedule_expression = null
      }
    } : key => rule if local.gpu_on_demand
  })

  # EventBridge retries a failed delivery with backoff for up to a day by default; an ECR event
  # older than an hour is better found by reconcile than delivered late.
  event_retry = {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 10
  }
}

resource "aws_cloudwatch_event_rule" "this" {
  for_each = local.event_rules

  name                = "${local.name}-${replace(each.key, "_", "-")}"
  description         = each.value.description
  event_pattern       = each.value.event_pattern
  schedule_expression = each.value.schedule_expression
}

# Every rule reaches the trigger. For training_failed it records the run as `failed` (guarded on its
# attempt): a task that never started or was killed cannot write that itself, and a run left
# `queued`/`running` would make every later push of its digest a duplicate.
resource "aws_cloudwatch_event_target" "trigger" {
  for_each = aws_cloudwatch_event_rule.this

  rule = each.value.name
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
  for_each = aws_cloudwatch_event_rule.this

  statement_id  = "AllowEventBridge-${replace(each.key, "_", "-")}"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.this.function_name
  principal     = "events.amazonaws.com"
  source_arn    = each.value.arn
}

# A failed training task is also reported to the notifications topic.
resource "aws_cloudwatch_event_target" "training_failed_notify" {
  rule = aws_cloudwatch_event_rule.this["training_failed"].name
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

# The rules and targets had one resource each before; these keep a deployed stack's rules in place.
moved {
  from = aws_cloudwatch_event_rule.ecr_push
  to   = aws_cloudwatch_event_rule.this["ecr_push"]
}

moved {
  from = aws_cloudwatch_event_rule.spot_interruption
  to   = aws_cloudwatch_event_rule.this["spot_interruption"]
}

moved {
  from = aws_cloudwatch_event_rule.training_failed
  to   = aws_cloudwatch_event_rule.this["training_failed"]
}

moved {
  from = aws_cloudwatch_event_rule.reconcile
  to   = aws_cloudwatch_event_rule.this["reconcile"]
}

moved {
  from = aws_cloudwatch_event_target.ecr_push
  to   = aws_cloudwatch_event_target.trigger["ecr_push"]
}

moved {
  from = aws_cloudwatch_event_target.spot_interruption
  to   = aws_cloudwatch_event_target.trigger["spot_interruption"]
}

moved {
  from = aws_cloudwatch_event_target.training_failed_trigger
  to   = aws_cloudwatch_event_target.trigger["training_failed"]
}

moved {
  from = aws_cloudwatch_event_target.reconcile
  to   = aws_cloudwatch_event_target.trigger["reconcile"]
}

moved {
  from = aws_cloudwatch_event_target.training_failed
  to   = aws_cloudwatch_event_target.training_failed_notify
}
