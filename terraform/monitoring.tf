# Where failures land and who hears about them:
#   trigger_failures  Lambda async invocations that failed after their retries (on-failure destination)
#   events_dlq        events EventBridge could not deliver to the Lambda or the topic
#   this (SNS)        alarms on both queues, Lambda errors, failed rule deliveries, failed training tasks

# --- encryption key for the topic -------------------------------------------------------------
# EventBridge and CloudWatch alarms cannot publish to a topic encrypted with the AWS-managed
# aws/sns key (its key policy cannot name them), so the topic gets a customer key: $1/month.

resource "aws_kms_key" "notifications" {
  description             = "${local.name}: encrypts the notifications topic"
  enable_key_rotation     = true
  deletion_window_in_days = 7
  policy                  = data.aws_iam_policy_document.notifications_key.json
}

resource "aws_kms_alias" "notifications" {
  name          = "alias/${local.name}-notifications"
  target_key_id = aws_kms_key.notifications.key_id
}

data "aws_iam_policy_document" "notifications_key" {
  # iam-lint:skip=RESOURCE_STAR: in a key policy "*" is the key the policy is attached to.
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: kms:* for the account root is the default key policy (it lets IAM policies grant use of the key at all); the CI apply role's statement is the key's administration.
  # checkov:skip=CKV_AWS_109: a key policy's "*" resource means this key; the account root statement is what lets IAM policies grant use of the key at all.
  # checkov:skip=CKV_AWS_111: as above: "*" in a key policy is the key itself.
  # checkov:skip=CKV_AWS_356: as above: "*" in a key policy is the key itself.
  statement {
    sid       = "AccountAdministersKey"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    # SNS calls GenerateDataKey (and Decrypt) on the publisher's behalf; AWS's examples write
    # "GenerateDataKey*", which would also allow the key-pair and no-plaintext variants nobody uses.
    sid       = "PublishersEncrypt"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com", "cloudwatch.amazonaws.com"]
    }

    # Confused-deputy guard: only on behalf of this account's rules and alarms. "IfExists": AWS's key
    # policy examples for these two publishers set no source condition, so whether they send
    # aws:SourceAccount/aws:SourceArn to KMS is not documented; a request that carries another
    # account or resource is refused, one that carries none is not.
    condition {
      test     = "StringEqualsIfExists"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }

    condition {
      test     = "ArnLikeIfExists"
      variable = "aws:SourceArn"
      values = [
        "arn:${local.partition}:events:${var.region}:${local.account_id}:rule/${local.name}-*",
        "arn:${local.partition}:cloudwatch:${var.region}:${local.account_id}:alarm:${local.name}-*",
      ]
    }
  }

  # The CI apply role (terraform/bootstrap) manages this key through this policy, which is in force
  # from the moment CreateKey returns: the provider's EnableKeyRotation and CreateAlias come right after
  # it, and a grant by tag could lag for minutes (KMS, "ABAC for AWS KMS"). Only when bootstrap's
  # roles exist (var.permissions_boundary): a key policy may name only principals that exist.
  dynamic "statement" {
    for_each = var.permissions_boundary ? ["${local.ci_role_arn_prefix}apply"] : []

    content {
      sid = "CiApplyRoleManagesKey"
      actions = [
        "kms:CreateAlias",
        "kms:DeleteAlias",
        "kms:DescribeKey",
        "kms:EnableKeyRotation",
        "kms:GetKeyPolicy",
        "kms:GetKeyRotationStatus",
        "kms:ListResourceTags",
        "kms:PutKeyPolicy",
        "kms:ScheduleKeyDeletion",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:UpdateAlias",
        "kms:UpdateKeyDescription",
      ]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = [statement.value]
      }
    }
  }
}

# --- topic ------------------------------------------------------------------------------------

resource "aws_sns_topic" "this" {
  name              = "${local.name}-notifications"
  kms_master_key_id = aws_kms_key.notifications.arn
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "TrainingFailedRulePublishes"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.this["training_failed"].arn]
    }
  }

  statement {
    sid       = "AlarmsPublish"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${local.partition}:cloudwatch:${var.region}:${local.account_id}:alarm:${local.name}-*"]
    }
  }
}

resource "aws_sns_topic_subscription" "email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

# --- dead-letter queues -----------------------------------------------------------------------
# SQS-managed encryption (SSE-SQS): free, and usable by EventBridge and Lambda without a key policy.
# Fourteen days (the maximum) gives a person time to look; `aws sqs receive-message` shows the
# event and, for the trigger, the error.

resource "aws_sqs_queue" "trigger_failures" {
  name                      = "${local.name}-trigger-failures"
  sqs_managed_sse_enabled   = true
  message_retention_seconds = 1209600
}

resource "aws_sqs_queue" "events_dlq" {
  name                      = "${local.name}-events-dlq"
  sqs_managed_sse_enabled   = true
  message_retention_seconds = 1209600
}

resource "aws_sqs_queue_policy" "events_dlq" {
  queue_url = aws_sqs_queue.events_dlq.id
  policy    = data.aws_iam_policy_document.events_dlq.json
}

data "aws_iam_policy_document" "events_dlq" {
  statement {
    sid       = "RulesDeadLetter"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.events_dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [for rule in aws_cloudwatch_event_rule.this : rule.arn]
    }
  }
}

# --- alarms -----------------------------------------------------------------------------------
# Each alarm fires on the first occurrence: every one of these means a push that did not train or
# a failure nobody would otherwise see. Missing data (no traffic) is fine.

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = {
    trigger-failures = aws_sqs_queue.trigger_failures.name
    events-dlq       = aws_sqs_queue.events_dlq.name
  }

  alarm_name          = "${local.name}-${each.key}-not-empty"
  alarm_description   = "Messages in ${each.value}: an event that did not start training. Inspect with aws sqs receive-message, fix, then run reconcile."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.this.arn]
  ok_actions          = [aws_sns_topic.this.arn]
}

resource "aws_cloudwatch_metric_alarm" "trigger_errors" {
  alarm_name          = "${local.name}-trigger-errors"
  alarm_description   = "The trigger Lambda raised; it retries, and after its retries the event goes to ${aws_sqs_queue.trigger_failures.name}."
  namespace           = "AWS/Lambda"
  metric_name         = "Errors"
  dimensions          = { FunctionName = aws_lambda_function.this.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.this.arn]
}

resource "aws_cloudwatch_metric_alarm" "rule_failed_invocations" {
  # Keyed "ecr-push", "spot-interruption", ...: the alarm names of a deployed stack stay as they were.
  for_each = { for key, rule in aws_cloudwatch_event_rule.this : replace(key, "_", "-") => rule.name }

  alarm_name          = "${local.name}-${each.key}-failed-invocations"
  alarm_description   = "EventBridge rule ${each.value} could not deliver an event to its target (it retries, then dead-letters)."
  namespace           = "AWS/Events"
  metric_name         = "FailedInvocations"
  dimensions          = { RuleName = each.value }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = [aws_sns_topic.this.arn]
}
