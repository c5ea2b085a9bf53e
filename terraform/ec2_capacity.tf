# What GPU tasks (gpu.tf) and multi-node Batch jobs (batch.tf) share: EC2 container instances. Both are
# off by default; with both off every resource here has count 0 and costs nothing.
#
# The instances run the ECS agent, which must reach the ECS endpoints. The stack's subnets have no
# public IPs by default and an awsvpc task on EC2 never gets one, so these features need
# network_mode = "private": its interface endpoints (ECR, logs, S3 gateway) serve the containers, and
# three more (ecs, ecs-agent, ecs-telemetry, network.tf) serve the agent: 3 x 2 AZ x $0.01/h =
# $43.80/month while either feature is on, the only idle cost of scaling out.

locals {
  gpu_enabled   = var.gpu.enabled
  batch_enabled = var.batch.enabled
  ec2_capacity  = local.gpu_enabled || local.batch_enabled

  gpu_task_family   = "${local.task_family}-gpu"
  gpu_provider_name = "${local.name}-gpu"
  # With var.gpu.spot: the on-demand GPU provider a GPU run resumes on after a Spot interruption or a
  # start that found no Spot capacity (gpu.tf).
  gpu_on_demand        = local.gpu_enabled && var.gpu.spot
  gpu_on_demand_name   = "${local.name}-gpu-od"
  batch_job_family     = "${local.task_family}-mnp"
  batch_queue_name     = "${local.name}-mnp"
  batch_environment    = "${local.name}-mnp"
  ecs_agent_endpoints  = local.ec2_capacity ? ["ecs", "ecs-agent", "ecs-telemetry"] : []
  container_instance_t = "${local.name}-container-instance"
}

# The EC2 container instances' launch templates, one per feature: the hardening both share is written
# once; each variant adds what differs. Batch picks the AMI (its ec2_configuration) and passes the
# instance profile and security groups itself, so its template sets neither.
locals {
  hardened_launch_template = {
    # IMDSv2 only, one hop: containers (awsvpc, a hop further) cannot reach the instance's credentials.
    metadata_options = { http_endpoint = "enabled", http_tokens = "required", http_put_response_hop_limit = 1 }
    # The CUDA image is ~6 GB compressed; 60 GiB holds two of them and Docker's scratch. Encrypted.
    root_volume = { device_name = "/dev/xvda", volume_size = 60, volume_type = "gp3", encrypted = true, delete_on_termination = true }
  }

  launch_templates = merge(
    local.gpu_enabled ? {
      gpu = {
        name_prefix            = "${local.name}-gpu-"
        description            = "ECS GPU container instances of ${local.cluster_name}"
        image_id               = data.aws_ssm_parameter.ecs_gpu_ami[0].insecure_value
        vpc_security_group_ids = [aws_security_group.tasks.id]
        instance_profile_arn   = aws_iam_instance_profile.container_instance[0].arn
        user_data = base64encode(<<-EOT
          #!/bin/bash
          cat >> /etc/ecs/ecs.config <<'CONFIG'
          ECS_CLUSTER=${aws_ecs_cluster.this.name}
          ECS_ENABLE_SPOT_INSTANCE_DRAINING=true
          CONFIG
        EOT
        )
        instance_tags = merge(local.tags, { Name = "${local.name}-gpu" })
      }
    } : {},
    local.batch_enabled ? {
      mnp = {
        name_prefix            = "${local.name}-mnp-"
        description            = "AWS Batch multi-node container instances: IMDSv2 only, encrypted root volume"
        image_id               = null
        vpc_security_group_ids = null
        instance_profile_arn   = null
        user_data              = null
        instance_tags          = null
      }
    } : {},
  )
}

resource "aws_launch_template" "container_instance" {
  for_each = local.launch_templates

  name_prefix            = each.value.name_prefix
  description            = each.value.description
  image_id               = each.value.image_id
  update_default_version = true
  vpc_security_group_ids = each.value.vpc_security_group_ids
  user_data              = each.value.user_data

  dynamic "iam_instance_profile" {
    for_each = each.value.instance_profile_arn == null ? [] : [each.value.instance_profile_arn]
    content {
      arn = iam_instance_profile.value
    }
  }

  metadata_options {
    http_endpoint               = local.hardened_launch_template.metadata_options.http_endpoint
    http_tokens                 = local.hardened_launch_template.metadata_options.http_tokens
    http_put_response_hop_limit = local.hardened_launch_template.metadata_options.http_put_response_hop_limit
  }

  block_device_mappings {
    device_name = local.hardened_launch_template.root_volume.device_name

    ebs {
      volume_size           = local.hardened_launch_template.root_volume.volume_size
      volume_type           = local.hardened_launch_template.root_volume.volume_type
      encrypted             = local.hardened_launch_template.root_volume.encrypted
      delete_on_termination = local.hardened_launch_template.root_volume.delete_on_termination
    }
  }

  dynamic "tag_specifications" {
    for_each = each.value.instance_tags == null ? [] : [each.value.instance_tags]
    content {
      resource_type = "instance"
      tags          = tag_specifications.value
    }
  }
}

moved {
  from = aws_launch_template.gpu[0]
  to   = aws_launch_template.container_instance["gpu"]
}

moved {
  from = aws_launch_template.batch[0]
  to   = aws_launch_template.container_instance["mnp"]
}

data "aws_iam_policy_document" "container_instance_trust" {
  # iam-lint:skip=MALFORMED: a trust policy names no Resource (the role it is attached to is the resource); parliament reads every document as an identity policy.
  count = local.ec2_capacity ? 1 : 0

  statement {
    sid     = "Ec2AssumeRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "container_instance" {
  count = local.ec2_capacity ? 1 : 0

  name                 = local.container_instance_t
  path                 = local.iam_path
  description          = "GPU and Batch container instances: the ECS agent registers, polls and reports; images and logs go through the task execution role"
  assume_role_policy   = data.aws_iam_policy_document.container_instance_trust[0].json
  max_session_duration = 3600
  permissions_boundary = var.permissions_boundary ? local.permissions_boundary_arn : null
}

# The ECS agent's calls, narrower than the managed AmazonEC2ContainerServiceforEC2Role: no
# ecs:CreateCluster, and no ECR or CloudWatch Logs (the tasks name the execution role, which pulls
# the image and writes the logs).
data "aws_iam_policy_document" "container_instance" {
  count = local.ec2_capacity ? 1 : 0

  statement {
    sid = "EcsAgentOnOurClusters"
    actions = [
      "ecs:DeregisterContainerInstance",
      "ecs:RegisterContainerInstance",
      "ecs:SubmitAttachmentStateChanges",
      "ecs:SubmitContainerStateChange",
      "ecs:SubmitTaskStateChange",
    ]
    # The stack's cluster (GPU tasks) and the cluster AWS Batch creates for its compute environment.
    resources = [
      aws_ecs_cluster.this.arn,
      "arn:${local.partition}:ecs:${var.region}:${local.account_id}:cluster/${local.batch_environment}_Batch_*",
    ]
  }

  statement {
    sid       = "EcsAgentSession"
    actions   = ["ecs:Poll", "ecs:StartTelemetrySession"]
    resources = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/*"]
  }

  statement {
    # The agent's own log lines: authorized on its cluster and its container instance.
    sid     = "EcsAgentSystemLogs"
    actions = ["ecs:PutSystemLogEvents"]
    resources = [
      aws_ecs_cluster.this.arn,
      "arn:${local.partition}:ecs:${var.region}:${local.account_id}:cluster/${local.batch_environment}_Batch_*",
      "arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/*/*",
    ]
  }

  statement {
    # DiscoverPollEndpoint supports no resource-level permission.
    sid       = "EcsAgentEndpoint"
    actions   = ["ecs:DiscoverPollEndpoint"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "container_instance" {
  count = local.ec2_capacity ? 1 : 0

  name   = "ecs-agent"
  role   = aws_iam_role.container_instance[0].id
  policy = data.aws_iam_policy_document.container_instance[0].json
}

resource "aws_iam_instance_profile" "container_instance" {
  count = local.ec2_capacity ? 1 : 0

  name = local.container_instance_t
  path = local.iam_path
  role = aws_iam_role.container_instance[0].name
}
