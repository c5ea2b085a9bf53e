# The cluster and the base task definition of the trainer. The trigger registers one more
# revision of the same family per pushed image digest (a copy of this one with the image
# pinned to repo@sha256:...), so the revision Terraform manages is the template, not what runs.

resource "aws_ecs_cluster" "this" {
  # checkov:skip=CKV_AWS_65: Container Insights bills custom metrics per task; task stops are already events (eventbridge.tf) and logs go to CloudWatch.
  name = local.cluster_name

  setting {
    name  = "containerInsights"
    value = "disabled"
  }
}

resource "aws_ecs_cluster_capacity_providers" "this" {
  cluster_name = aws_ecs_cluster.this.name
  capacity_providers = concat(
    ["FARGATE", "FARGATE_SPOT"],
    [for provider in aws_ecs_capacity_provider.gpu : provider.name],
  )

  # The trigger always passes its own strategy (Spot first, on-demand on a capacity failure);
  # this default only applies to tasks started by hand.
  default_capacity_provider_strategy {
    capacity_provider = "FARGATE_SPOT"
    weight            = 1
  }
}

resource "aws_cloudwatch_log_group" "trainer" {
  # checkov:skip=CKV_AWS_158: CloudWatch Logs encrypts at rest with service keys; the logs hold no secrets and a customer key adds cost and key-policy coupling.
  # checkov:skip=CKV_AWS_338: a year of training logs is not worth its storage; each run's metrics and report live on in the artifacts bucket.
  name              = local.trainer_log_group
  retention_in_days = var.log_retention_days
}

resource "aws_ecs_task_definition" "this" {
  family                   = local.task_family
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.task_size.cpu)
  memory                   = tostring(var.task_size.memory)
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.task_cpu_architecture
  }

  ephemeral_storage {
    size_in_gib = var.task_ephemeral_storage_gib
  }

  # The one writable place (the root filesystem is read-only), on the task's ephemeral storage. The
  # image declares /scratch as a VOLUME owned by its non-root user, so Fargate gives the mount that
  # owner; it also points HOME, TMPDIR and MPLCONFIGDIR there (trainer/Dockerfile).
  volume {
    name = "scratch"
  }

  container_definitions = jsonencode([local.trainer_containers.fargate])
}

# The trainer's container, written once: what every variant shares, then per variant (Fargate, ECS on GPU
# instances, a Batch multi-node job) only what differs. Batch's container properties are not an ECS
# container definition (no name, essential, stopTimeout or task volumes; the roles sit in the container).
locals {
  trainer_container_common = {
    # Never run: the trigger registers a revision with the pushed image digest for every run.
    image       = "${aws_ecr_repository.this.repository_url}:base-revision-not-run"
    environment = [for key in sort(keys(local.trainer_environment)) : { name = key, value = local.trainer_environment[key] }]

    readonlyRootFilesystem = true
  }

  # An ECS task's container (Fargate and GPU): the scratch volume is the task's (see each task definition).
  trainer_container_ecs = merge(local.trainer_container_common, {
    name      = local.container_name
    essential = true
    # Fargate Spot gives two minutes' warning (an EC2 Spot instance too): the trainer's SIGTERM handler
    # writes a checkpoint.
    stopTimeout = 120
    mountPoints = [
      { sourceVolume = "scratch", containerPath = local.scratch_path, readOnly = false },
    ]
  })

  trainer_log_stream_prefixes = {
    fargate = local.container_name
    gpu     = "${local.container_name}-gpu"
    mnp     = "${local.container_name}-mnp"
  }
  trainer_log_configurations = {
    for variant, prefix in local.trainer_log_stream_prefixes : variant => {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.trainer.name
        awslogs-region        = var.region
        awslogs-stream-prefix = prefix
      }
    }
  }

  # A variant on GPU instances says so (TRAINER_DEVICE=cuda): a container in which torch sees no usable GPU
  # (a driver or toolkit mismatch, a CPU-only image) then exits 2 naming the setting, instead of training on
  # the CPU at GPU prices. A Batch environment without GPUs (var.batch.gpus_per_node = 0) trains on the CPU.
  trainer_gpu_environment = merge(local.trainer_environment, { TRAINER_DEVICE = "cuda" })
  trainer_mnp_environment = var.batch.gpus_per_node > 0 ? local.trainer_gpu_environment : local.trainer_environment

  trainer_containers = {
    fargate = merge(local.trainer_container_ecs, {
      logConfiguration = local.trainer_log_configurations.fargate
    })
    gpu = merge(local.trainer_container_ecs, {
      environment          = [for key in sort(keys(local.trainer_gpu_environment)) : { name = key, value = local.trainer_gpu_environment[key] }]
      resourceRequirements = [{ type = "GPU", value = "1" }]
      logConfiguration     = local.trainer_log_configurations.gpu
    })
    mnp = merge(local.trainer_container_common, {
      environment          = [for key in sort(keys(local.trainer_mnp_environment)) : { name = key, value = local.trainer_mnp_environment[key] }]
      command              = ["torchrun"]
      jobRoleArn           = aws_iam_role.task.arn
      executionRoleArn     = aws_iam_role.execution.arn
      resourceRequirements = local.batch_resources
      # The one writable place, in memory: world-writable with the sticky bit, so the image's
      # non-root user can write whatever uid Batch's host gives the mount.
      linuxParameters = {
        tmpfs = [{ containerPath = local.scratch_path, size = 4096, mountOptions = ["rw", "mode=1777"] }]
      }
      logConfiguration = local.trainer_log_configurations.mnp
    })
  }
}
