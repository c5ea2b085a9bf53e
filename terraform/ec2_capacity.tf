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
