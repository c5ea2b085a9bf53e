# --- naming and placement ---------------------------------------------------------------------

variable "name" {
  description = "Name prefix of every resource (ECR repository, cluster, task family, Lambda function, bucket). The local pipeline and the bootstrap root build the same names from it."
  type        = string
  default     = "pushtrain"

  validation {
    # The artifacts bucket name is "<name>-artifacts-<12-digit account>-<region>" and must stay within 63 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "The name must be 3-24 characters of lowercase letters, digits and dashes, starting with a letter and not ending with a dash."
  }
}

variable "region" {
  description = "AWS region to deploy the stack into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.region))
    error_message = "The region must look like an AWS region code, for example us-east-1."
  }
}

variable "tags" {
  description = "Extra tags applied to every resource through the provider's default_tags."
  type        = map(string)
  default     = {}
}

# --- network --------------------------------------------------------------------------------

variable "network_mode" {
  description = "Where training tasks run: \"public\" (the default: public subnets with an internet gateway, a public IP per task, no inbound rule, $0 idle) or \"private\" (no internet route: S3 gateway endpoint plus ECR and CloudWatch Logs interface endpoints, $21.90/month idle in one zone, see private_endpoint_zones)."
  type        = string
  default     = "public"

  validation {
    condition     = contains(["private", "public"], var.network_mode)
    error_message = "The network_mode must be \"private\" or \"public\"."
  }
}

variable "private_endpoint_zones" {
  description = "In the private network mode, how many of the two zones get the three interface endpoints: 1 ($21.90/month idle; tasks in the other zone cross zones to reach them) or 2 ($43.80; no cross-zone dependency)."
  type        = number
  default     = 1

  validation {
    condition     = contains([1, 2], var.private_endpoint_zones)
    error_message = "The private_endpoint_zones must be 1 or 2."
  }
}

variable "vpc_cidr" {
  description = "CIDR block of the VPC; the two subnets take the first two /20s of it."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrsubnet(var.vpc_cidr, 4, 1)) && tonumber(split("/", var.vpc_cidr)[1]) <= 24
    error_message = "The vpc_cidr must be a valid IPv4 CIDR block of size /24 or larger."
  }
}

variable "availability_zone_suffixes" {
  description = "Letters of the two availability zones the subnets go in (\"a\" and \"b\" mean <region>a and <region>b); two zones let Fargate Spot find capacity in either."
  type        = list(string)
  default     = ["a", "b"]

  validation {
    condition     = length(var.availability_zone_suffixes) == 2 && length(distinct(var.availability_zone_suffixes)) == 2 && alltrue([for suffix in var.availability_zone_suffixes : can(regex("^[a-z]$", suffix))])
    error_message = "The availability_zone_suffixes must be two different single letters, for example [\"a\", \"b\"]."
  }
}

# --- training task ----------------------------------------------------------------------------

variable "task_size" {
  description = "CPU units and memory (MiB) of one training task; must be a combination Fargate accepts."
  type = object({
    cpu    = number
    memory = number
  })
  # 2 vCPU / 4 GiB: the size the trainer's cost estimate (TrainConfig.cost_per_hour) assumes.
  default = {
    cpu    = 2048
    memory = 4096
  }

  validation {
    # Fargate's table: each CPU size allows a memory range in fixed steps (MiB).
    condition = anytrue([
      var.task_size.cpu == 256 && contains([512, 1024, 2048], var.task_size.memory),
      var.task_size.cpu == 512 && var.task_size.memory >= 1024 && var.task_size.memory <= 4096 && var.task_size.memory % 1024 == 0,
      var.task_size.cpu == 1024 && var.task_size.memory >= 2048 && var.task_size.memory <= 8192 && var.task_size.memory % 1024 == 0,
      var.task_size.cpu == 2048 && var.task_size.memory >= 4096 && var.task_size.memory <= 16384 && var.task_size.memory % 1024 == 0,
      var.task_size.cpu == 4096 && var.task_size.memory >= 8192 && var.task_size.memory <= 30720 && var.task_size.memory % 1024 == 0,
      var.task_size.cpu == 8192 && var.task_size.memory >= 16384 && var.task_size.memory <= 61440 && var.task_size.memory % 4096 == 0,
      var.task_size.cpu == 16384 && var.task_size.memory >= 32768 && var.task_size.memory <= 122880 && var.task_size.memory % 8192 == 0,
    ])
    error_message = "The task_size is not a CPU/memory pair Fargate accepts (for example 1024/2048, 2048/4096..16384 in 1024 steps, 4096/8192..30720 in 1024 steps); see https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html#fargate-tasks-size."
  }
}

variable "task_cpu_architecture" {
  description = "CPU architecture of the training image: X86_64, or ARM64 (Graviton, about 20% cheaper per vCPU-hour, but Fargate Spot does not run ARM64)."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.task_cpu_architecture)
    error_message = "The task_cpu_architecture must be X86_64 or ARM64."
  }
}

variable "task_ephemeral_storage_gib" {
  description = "Ephemeral storage of one training task in GiB (holds the /scratch volume: dataset copy, checkpoints, temporary files); 21 is free, each GiB above costs extra."
  type        = number
  default     = 21

  validation {
    condition     = var.task_ephemeral_storage_gib >= 21 && var.task_ephemeral_storage_gib <= 200 && floor(var.task_ephemeral_storage_gib) == var.task_ephemeral_storage_gib
    error_message = "The task_ephemeral_storage_gib must be a whole number from 21 to 200."
  }
}

variable "model_name" {
  description = "Model name the trainer publishes under (models/<model_name>/ in the artifacts bucket); becomes TRAINER_MODEL_NAME."
  type        = string
  default     = "cifar10"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{0,62}$", var.model_name))
    error_message = "The model_name must be 1-63 characters of lowercase letters, digits, dots, dashes and underscores."
  }
}

variable "accuracy_floor" {
  description = "Test accuracy a new model version must reach to pass the gate (0-1); becomes TRAINER_ACCURACY_FLOOR."
  type        = number
  default     = 0.9

  validation {
    condition     = var.accuracy_floor >= 0 && var.accuracy_floor <= 1
    error_message = "The accuracy_floor must be between 0 and 1."
  }
}

variable "max_attempts" {
  description = "Attempts a run may take in total: a run interrupted by Fargate Spot is started again until it has used this many; becomes PUSHTRAIN_MAX_ATTEMPTS."
  type        = number
  default     = 3

  validation {
    condition     = var.max_attempts >= 1 && var.max_attempts <= 10 && floor(var.max_attempts) == var.max_attempts
    error_message = "The max_attempts must be a whole number from 1 to 10."
  }
}

# --- trigger (Lambda) -------------------------------------------------------------------------

variable "reconcile_schedule" {
  description = "How often the trigger reconciles: it starts training for images pushed in the last week whose push event never arrived (ECR events are best effort). An EventBridge rate() or cron() expression."
  type        = string
  default     = "rate(6 hours)"

  validation {
    condition     = can(regex("^(rate\\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\\)|cron\\(.+\\))$", var.reconcile_schedule))
    error_message = "The reconcile_schedule must be an EventBridge schedule expression such as \"rate(6 hours)\" or \"cron(0 3 * * ? *)\"."
  }
}

variable "lambda_zip_path" {
  description = "Path of the trigger's deployment zip, relative to this directory unless absolute; build it with `python3 scripts/package_lambda.py` before plan or apply."
  type        = string
  default     = "../build/trigger.zip"
}

variable "lambda_handler" {
  description = "Handler of the trigger function inside the zip (module.function)."
  type        = string
  default     = "trigger.handler.lambda_handler"
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrent executions of the trigger; null (the default) reserves none. A new account's concurrency quota is 10 and Lambda keeps 10 unreserved, so any reservation there fails at PutFunctionConcurrency: set this only after raising the quota, to at most the quota minus 10. Bursts need no cap for correctness: the trigger starts one task per digest, idempotently."
  type        = number
  default     = null

  validation {
    condition     = var.lambda_reserved_concurrency == null ? true : var.lambda_reserved_concurrency >= 1 && floor(var.lambda_reserved_concurrency) == var.lambda_reserved_concurrency
    error_message = "The lambda_reserved_concurrency must be null or a whole number of at least 1."
  }
}

# --- retention and alerts -----------------------------------------------------------------------

variable "log_retention_days" {
  description = "Retention of the trainer's and the trigger's CloudWatch log groups, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, ...)."
  }
}

variable "checkpoint_expiration_days" {
  description = "Days after which objects under runs/ (checkpoints and run records) expire from the artifacts bucket. At least 8: the scheduled reconcile looks 7 days back and starts every image without a run record, so a shorter expiry would train those images again."
  type        = number
  default     = 30

  validation {
    condition     = var.checkpoint_expiration_days >= 8 && floor(var.checkpoint_expiration_days) == var.checkpoint_expiration_days
    error_message = "The checkpoint_expiration_days must be a whole number of at least 8 (longer than the reconcile's 7-day look-back, or expired run records would be trained again)."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a replaced (noncurrent) object version is kept in the artifacts bucket before it expires."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "The noncurrent_version_expiration_days must be a whole number of at least 1."
  }
}

variable "ecr_image_retention_days" {
  description = "Days after its push that a trainer image (and the untagged manifests of its index) expires from ECR, unless a published model version keeps it (tag keep-*). At least checkpoint_expiration_days: a run record can name the image's digest until then."
  type        = number
  default     = 60

  validation {
    condition     = floor(var.ecr_image_retention_days) == var.ecr_image_retention_days && var.ecr_image_retention_days >= var.checkpoint_expiration_days
    error_message = "The ecr_image_retention_days must be a whole number of at least checkpoint_expiration_days (a run record may name the image until its runs/ objects expire)."
  }
}

variable "artifacts_bucket_name" {
  description = "Name of the artifacts bucket; null derives \"<name>-artifacts-<account id>-<region>\"."
  type        = string
  default     = null

  validation {
    condition     = var.artifacts_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifacts_bucket_name))
    error_message = "The artifacts_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots and dashes)."
  }
}

variable "permissions_boundary" {
  description = "Whether the stack's IAM roles carry the permissions boundary terraform/bootstrap creates (\"<name>-stack-boundary\"); the CI apply role may only create roles that do. false only for an account without the bootstrap root, applied by an administrator."
  type        = bool
  default     = true
}

variable "artifacts_readers" {
  description = "IAM role ARNs besides the stack's (trainer task, trigger, CI retrain, report and plan roles) that may read runs/ and models/, such as an administrator's role; the bucket policy denies every other principal, whatever its IAM policy allows. Their IAM policy must still grant the reads."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.artifacts_readers : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", arn))])
    error_message = "Each artifacts_readers entry must be an IAM role ARN (arn:aws:iam::<account>:role/<path and name>)."
  }
}

variable "destroy_with_data" {
  description = "Whether `terraform destroy` may delete the artifacts bucket with its models and the ECR repository with its images; false (the default) makes destroy fail while either holds data."
  type        = bool
  default     = false
}

variable "alarm_email" {
  description = "Email address subscribed to the notifications topic (alarms, failed training tasks); null subscribes nobody. AWS sends a confirmation mail first."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_email == null || can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", var.alarm_email))
    error_message = "The alarm_email must be an email address or null."
  }
}

# --- scale-out (each off by default: nothing is created, nothing is billed) -------------------

variable "gpu" {
  description = "GPU training: an ECS capacity provider on an Auto Scaling group of GPU instances (minimum 0, managed scaling, Spot first) and the GPU task definition family <name>-trainer-gpu; requests with compute \"gpu\" run there. Needs network_mode = \"private\" (the instances reach ECS through interface endpoints). Off by default: nothing is created, $0 per month."
  type = object({
    enabled        = optional(bool, false)
    instance_types = optional(list(string), ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"])
    max_instances  = optional(number, 2)
    spot           = optional(bool, true)
    cpu            = optional(number, 3072)
    memory         = optional(number, 14336)
  })
  # Spelled out (not `{}`), so that readers of the defaults alone (the local pipeline) see it off.
  default = {
    enabled        = false
    instance_types = ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"]
    max_instances  = 2
    spot           = true
    cpu            = 3072
    memory         = 14336
  }

  validation {
    condition     = length(var.gpu.instance_types) >= 1 && var.gpu.max_instances >= 1 && var.gpu.max_instances <= 20 && floor(var.gpu.max_instances) == var.gpu.max_instances
    error_message = "The gpu object needs at least one instance type and max_instances a whole number from 1 to 20."
  }

  validation {
    condition     = var.gpu.cpu >= 1024 && var.gpu.memory >= 2048
    error_message = "The gpu task needs at least 1024 CPU units and 2048 MiB (it must fit the smallest instance type with room for the ECS agent)."
  }
}

variable "default_compute" {
  description = "Where a push trains, and a retrain request or sweep that names no compute: \"cpu\" (Fargate, the CPU image tagged <git sha>) or \"gpu\" (the GPU capacity of var.gpu, the CUDA image tagged <git sha>-cuda). A push of the other variant is skipped. \"gpu\" needs var.gpu.enabled."
  type        = string
  default     = "cpu"
  nullable    = false

  validation {
    condition     = contains(["cpu", "gpu"], var.default_compute)
    error_message = "The default_compute must be \"cpu\" or \"gpu\"."
  }
}

variable "batch" {
  description = "Multi-node data-parallel training on AWS Batch: a managed EC2 compute environment (on-demand: Batch runs no multi-node job on Spot) in a cluster placement group, a job queue and the multi-node job definition family <name>-trainer-mnp; requests with nodes > 1 run there under torchrun. Needs network_mode = \"private\". Off by default: nothing is created, $0 per month."
  type = object({
    enabled         = optional(bool, false)
    instance_type   = optional(string, "g5.xlarge")
    gpus_per_node   = optional(number, 1)
    vcpus_per_node  = optional(number, 4)
    memory_per_node = optional(number, 14336)
    max_nodes       = optional(number, 4)
  })
  default = {
    enabled         = false
    instance_type   = "g5.xlarge"
    gpus_per_node   = 1
    vcpus_per_node  = 4
    memory_per_node = 14336
    max_nodes       = 4
  }

  validation {
    condition     = var.batch.max_nodes >= 2 && var.batch.max_nodes <= 16 && var.batch.gpus_per_node >= 0 && var.batch.vcpus_per_node >= 1 && var.batch.memory_per_node >= 2048
    error_message = "The batch object needs max_nodes from 2 to 16, gpus_per_node >= 0, vcpus_per_node >= 1 and memory_per_node >= 2048 MiB."
  }
}
