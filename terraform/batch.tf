# Multi-node data-parallel training on AWS Batch (off by default, var.batch): a managed EC2 compute
# environment that scales from 0 vCPUs, a job queue, and the multi-node parallel job definition family.
# Each node runs `python -m trainer torchrun`, which maps Batch's node variables (main node index and
# address, node index, number of nodes) onto torchrun's rendezvous (trainer/src/trainer/distributed.py).
# The trigger registers one revision per image digest and submits a job for requests with nodes > 1.
#
# Batch runs no multi-node job on Spot, so the environment is on demand; a node lost to a host failure
# ends the attempt and Batch's retry strategy starts the whole job again (same run id, resumed from
# the checkpoint), up to var.max_attempts attempts.
#
# Cost (us-east-1 on-demand list prices, November 2026): idle $0 (0 vCPUs; a cluster placement group is
# free) plus the ECS interface endpoints of ec2_capacity.tf ($43.80/month while on). Per run: nodes x
# instance-hours, e.g. 2 x g5.xlarge at $1.006/h = $2.01 per hour of training.

resource "aws_placement_group" "batch" {
  count = local.batch_enabled ? 1 : 0

  # Nodes of one job next to each other: the gradient all-reduce is latency-bound.
  name     = local.batch_environment
  strategy = "cluster"
}

resource "aws_security_group" "batch_nodes" {
  count = local.batch_enabled ? 1 : 0

  name        = "${local.name}-batch-nodes"
  description = "Multi-node training: the nodes of a job reach each other (torchrun rendezvous, gloo/NCCL)"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${local.name}-batch-nodes" }
}

resource "aws_vpc_security_group_ingress_rule" "batch_nodes" {
  # checkov:skip=CKV_AWS_25: the source is this same group (the job's other nodes), never 0.0.0.0/0; the range spans 3389 only because gloo/NCCL pick their ports at run time.
  count = local.batch_enabled ? 1 : 0

  security_group_id            = aws_security_group.batch_nodes[0].id
  description                  = "TCP from the other nodes (rendezvous port 29500, collective ports chosen at run time)"
  ip_protocol                  = "tcp"
  from_port                    = 1024
  to_port                      = 65535
  referenced_security_group_id = aws_security_group.batch_nodes[0].id
}

resource "aws_vpc_security_group_egress_rule" "batch_nodes" {
  count = local.batch_enabled ? 1 : 0

  security_group_id            = aws_security_group.batch_nodes[0].id
  description                  = "TCP to the other nodes"
  ip_protocol                  = "tcp"
  from_port                    = 1024
  to_port                      = 65535
  referenced_security_group_id = aws_security_group.batch_nodes[0].id
}

resource "aws_batch_compute_environment" "mnp" {
  count = local.batch_enabled ? 1 : 0

  name  = local.batch_environment
  type  = "MANAGED"
  state = "ENABLED"

  compute_resources {
    type                = "EC2"
    allocation_strategy = "BEST_FIT_PROGRESSIVE"
    min_vcpus           = 0
    max_vcpus           = var.batch.max_nodes * var.batch.vcpus_per_node
    instance_type       = [var.batch.instance_type]
    instance_role       = aws_iam_instance_profile.container_instance[0].arn
    placement_group     = aws_placement_group.batch[0].name
    # One zone: a cluster placement group lives in one.
    subnets            = [for subnet in aws_subnet.this : subnet.id if subnet.availability_zone == local.availability_zones[0]]
    security_group_ids = [aws_security_group.tasks.id, aws_security_group.batch_nodes[0].id]

    ec2_configuration {
      image_type = var.batch.gpus_per_node > 0 ? "ECS_AL2023_NVIDIA" : "ECS_AL2023"
    }

    launch_template {
      launch_template_id = aws_launch_template.container_instance["mnp"].id
      version            = aws_launch_template.container_instance["mnp"].latest_version
    }
  }

  lifecycle {
    precondition {
      condition     = local.private_network
      error_message = "batch.enabled needs network_mode = \"private\": multi-node containers (awsvpc) get no public IP and reach ECR, S3 and ECS through the VPC endpoints."
    }
  }
}

resource "aws_batch_job_queue" "mnp" {
  count = local.batch_enabled ? 1 : 0

  name     = local.batch_queue_name
  state    = "ENABLED"
  priority = 1

  compute_environment_order {
    order               = 1
    compute_environment = aws_batch_compute_environment.mnp[0].arn
  }

  # A job that can never start would wait RUNNABLE forever (and hold the queue's head): Batch cancels it
  # after the time below for the reason it gives (docs.aws.amazon.com/batch/latest/userguide/
  # job_stuck_in_runnable_time_limit_actions.html; 600 s is the least it allows). The cancelled job's
  # FAILED event marks the run failed (the batch_job_failed rule). More nodes than the environment holds
  # are refused by the trigger before submitting (BATCH_MAX_NODES); these catch what remains.
  dynamic "job_state_time_limit_action" {
    for_each = {
      "MISCONFIGURATION:COMPUTE_ENVIRONMENT_MAX_RESOURCE" = 600
      "MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT"         = 600
      "CAPACITY:INSUFFICIENT_INSTANCE_CAPACITY"           = 4 * 3600 # the on-demand pool may come back
    }
    content {
      action           = "CANCEL"
      state            = "RUNNABLE"
      reason           = job_state_time_limit_action.key
      max_time_seconds = job_state_time_limit_action.value
    }
  }
}

locals {
  batch_resources = concat(
    [
      { type = "VCPU", value = tostring(var.batch.vcpus_per_node) },
      { type = "MEMORY", value = tostring(var.batch.memory_per_node) },
    ],
    var.batch.gpus_per_node > 0 ? [{ type = "GPU", value = tostring(var.batch.gpus_per_node) }] : [],
  )
}

resource "aws_batch_job_definition" "mnp" {
  count = local.batch_enabled ? 1 : 0

  name                  = local.batch_job_family
  type                  = "multinode"
  platform_capabilities = ["EC2"]
  propagate_tags        = true

  retry_strategy {
    attempts = var.max_attempts

    # A lost host (Batch says "Host EC2 (instance i-...) terminated.") is worth another attempt, which
    # resumes from the checkpoint; a trainer that failed is not.
    evaluate_on_exit {
      on_status_reason = "Host EC2*"
      action           = "RETRY"
    }

    # The trainer stopped gracefully (SIGTERM: checkpointed, exit 75, which `python -m trainer torchrun`
    # passes through from rank 0): the next attempt resumes. A job the trigger terminates is never retried
    # (docs.aws.amazon.com/batch/latest/userguide/job_retries.html: terminated jobs are not retried).
    evaluate_on_exit {
      on_exit_code = "75"
      action       = "RETRY"
    }

    evaluate_on_exit {
      on_reason = "*"
      action    = "EXIT"
    }
  }

  timeout {
    attempt_duration_seconds = 24 * 3600
  }

  node_properties = jsonencode({
    mainNode = 0
    numNodes = 2 # the trigger overrides it per job (nodeOverrides.numNodes)
    nodeRangeProperties = [
      {
        targetNodes = "0:"
        container   = local.trainer_containers.mnp
      },
    ]
  })
}

# --- what the trigger may do with Batch (its own policy, so the Fargate-only stack grants nothing of it) ---

data "aws_iam_policy_document" "trigger_batch" {
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: iam:PassRole, for the execution and task roles only and only to batch.amazonaws.com and ecs-tasks.amazonaws.com, is what a multi-node job definition naming them needs.
  count = local.batch_enabled ? 1 : 0

  statement {
    # DescribeJobDefinitions, DescribeJobs (verifying a FAILED event) and ListJobs have no resource type.
    sid       = "FindJobDefinitionsAndJobs"
    actions   = ["batch:DescribeJobDefinitions", "batch:DescribeJobs", "batch:ListJobs"]
    resources = ["*"]
  }

  statement {
    sid       = "PinJobDefinitions"
    actions   = ["batch:RegisterJobDefinition", "batch:TagResource"]
    resources = ["arn:${local.partition}:batch:${var.region}:${local.account_id}:job-definition/${local.batch_job_family}*"]
  }

  statement {
    # SubmitJob is authorized on the queue and on the job definition; the job it creates is tagged.
    sid     = "SubmitMultiNodeJobs"
    actions = ["batch:SubmitJob", "batch:TagResource"]
    resources = [
      aws_batch_job_queue.mnp[0].arn,
      "arn:${local.partition}:batch:${var.region}:${local.account_id}:job-definition/${local.batch_job_family}:*",
      "arn:${local.partition}:batch:${var.region}:${local.account_id}:job/*",
    ]
  }

  statement {
    sid       = "PassTrainerRolesToBatch"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.execution.arn, aws_iam_role.task.arn]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["batch.amazonaws.com", "ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "trigger_batch" {
  count = local.batch_enabled ? 1 : 0

  name   = "start-multi-node-training"
  role   = aws_iam_role.trigger.id
  policy = data.aws_iam_policy_document.trigger_batch[0].json
}

# --- a job that failed for good -> trigger (mark the run failed: the trainer cannot, if it never ran) ---
# The rule, its trigger target and permission are the `batch_job_failed` entry of local.event_rules
# (eventbridge.tf), present only when var.batch.enabled.
