# GPU training on ECS (off by default, var.gpu): a capacity provider on an Auto Scaling group of GPU
# instances that starts at 0 and scales with the tasks placed on it (managed scaling), and the GPU task
# definition family. The trigger registers one revision of that family per CUDA image digest, as it does
# for the Fargate family, and starts it with the capacity provider for runs with compute "gpu" (a retrain
# request's `compute`, or var.default_compute for pushes, sweeps and requests that name none). With
# var.gpu.spot a second, on-demand group and provider take a run's next attempt after a Spot interruption
# or a start that found no capacity.
#
# Cost (us-east-1 on-demand list prices, November 2026): idle $0 for the group itself (0 instances) plus
# the ECS interface endpoints of ec2_capacity.tf ($43.80/month while on). Per run: g6.xlarge (1 NVIDIA L4,
# 4 vCPU, 16 GiB) $0.8048/h on demand; Spot typically 50-70 % less. airbench94 takes ~4 s of GPU time on
# an A100 and about 1 minute on an L4 with evaluation, so a run costs about the instance's boot (2-4 min)
# plus its minute: ~$0.07 on demand.

data "aws_ssm_parameter" "ecs_gpu_ami" {
  count = local.gpu_enabled ? 1 : 0

  # AWS's public parameter for the current ECS GPU-optimized Amazon Linux 2023 AMI (NVIDIA driver,
  # container toolkit and the ECS agent with GPU support).
  name = "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
}

# Two groups of the same launch template, each with its capacity provider: "main" (Spot over several
# GPU types with var.gpu.spot, else on demand) and, with var.gpu.spot, "on_demand" for the fallback.
# An EC2 capacity provider never refuses RunTask for lack of instances: the task waits in PROVISIONING
# while managed scaling asks the group for one. So the fallback cannot be a second RunTask, as for
# Fargate; it is the on-demand provider, which the trigger names for the next attempt of a GPU run whose
# Spot task was interrupted or never placed (trigger.stops). Minimum 0: it costs nothing until then.
locals {
  # Every group's name starts with this (the CI apply role may manage "<name>-gpu-*" groups only).
  gpu_group_prefix = "${local.name}-gpu-"
  gpu_groups = merge(
    local.gpu_enabled ? {
      main = { provider = local.gpu_provider_name, name_prefix = local.gpu_group_prefix, spot = var.gpu.spot }
    } : {},
    local.gpu_on_demand ? {
      on_demand = { provider = local.gpu_on_demand_name, name_prefix = "${local.gpu_group_prefix}od-", spot = false }
    } : {},
  )
}

resource "aws_autoscaling_group" "gpu" {
  for_each = local.gpu_groups

  name_prefix         = each.value.name_prefix
  min_size            = 0
  max_size            = var.gpu.max_instances
  vpc_zone_identifier = [for subnet in aws_subnet.this : subnet.id]
  # ECS managed termination protection: the capacity provider decides which instance may go.
  protect_from_scale_in = true
  capacity_rebalance    = each.value.spot

  mixed_instances_policy {
    # Spot over several GPU types (price-capacity-optimized picks the deepest pools), or every instance
    # on demand. Tasks wait in PROVISIONING while no capacity exists.
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = each.value.spot ? 0 : 100
      spot_allocation_strategy                 = "price-capacity-optimized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.container_instance["gpu"].id
        version            = aws_launch_template.container_instance["gpu"].latest_version
      }

      dynamic "override" {
        for_each = var.gpu.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  tag {
    key                 = "AmazonECSManaged"
    value               = "true"
    propagate_at_launch = true
  }

  lifecycle {
    # Managed scaling sets the desired capacity.
    ignore_changes = [desired_capacity]

    precondition {
      condition     = local.private_network
      error_message = "gpu.enabled needs network_mode = \"private\": GPU instances reach ECS, ECR and S3 through the VPC endpoints."
    }
  }
}

resource "aws_ecs_capacity_provider" "gpu" {
  for_each = local.gpu_groups

  name = each.value.provider

  auto_scaling_group_provider {
    auto_scaling_group_arn         = aws_autoscaling_group.gpu[each.key].arn
    managed_termination_protection = "ENABLED"
    managed_draining               = "ENABLED"

    managed_scaling {
      status                    = "ENABLED"
      target_capacity           = 100
      minimum_scaling_step_size = 1
      maximum_scaling_step_size = var.gpu.max_instances
      instance_warmup_period    = 300
    }
  }
}

moved {
  from = aws_autoscaling_group.gpu[0]
  to   = aws_autoscaling_group.gpu["main"]
}

moved {
  from = aws_ecs_capacity_provider.gpu[0]
  to   = aws_ecs_capacity_provider.gpu["main"]
}

moved {
  from = aws_autoscaling_group.gpu_on_demand[0]
  to   = aws_autoscaling_group.gpu["on_demand"]
}

moved {
  from = aws_ecs_capacity_provider.gpu_on_demand[0]
  to   = aws_ecs_capacity_provider.gpu["on_demand"]
}

resource "aws_ecs_task_definition" "gpu" {
  count = local.gpu_enabled ? 1 : 0

  family                   = local.gpu_task_family
  requires_compatibilities = ["EC2"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.gpu.cpu)
  memory                   = tostring(var.gpu.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  # A Docker volume per task: Docker fills a new volume from the image's /scratch, owner included
  # (the image's non-root user), as Fargate does for the Fargate family.
  volume {
    name = "scratch"

    docker_volume_configuration {
      scope  = "task"
      driver = "local"
    }
  }

  container_definitions = jsonencode([local.trainer_containers.gpu])
}

# --- the trigger on a Spot notice (var.gpu.spot): find our tasks on the instance and stop them ----------

# What lambda/src/trigger/notices.py calls beyond the trigger's own policy (iam.tf), only where a task of
# ours can run on Spot (the spot_notice rule exists only then, eventbridge.tf). ListTasks and
# DescribeTasks are granted in iam.tf already.
data "aws_iam_policy_document" "trigger_spot_notice" {
  count = local.gpu_on_demand ? 1 : 0

  statement {
    # The instance's container instance: ListContainerInstances is authorized on the cluster itself.
    sid       = "FindNoticedContainerInstances"
    actions   = ["ecs:ListContainerInstances"]
    resources = [aws_ecs_cluster.this.arn]
  }

  statement {
    sid       = "DescribeNoticedContainerInstances"
    actions   = ["ecs:DescribeContainerInstances"]
    resources = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/${local.cluster_name}/*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }

  statement {
    # SIGTERM to the trainer (it checkpoints and exits 75): only tasks of our cluster.
    sid       = "StopNoticedTasks"
    actions   = ["ecs:StopTask"]
    resources = [local.cluster_tasks_arn]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
}

resource "aws_iam_role_policy" "trigger_spot_notice" {
  count = local.gpu_on_demand ? 1 : 0

  name   = "stop-tasks-on-spot-notices"
  role   = aws_iam_role.trigger.id
  policy = data.aws_iam_policy_document.trigger_spot_notice[0].json
}
