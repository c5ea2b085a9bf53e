# Names and tags. The stack's names are repeated here only to scope the CI roles to them;
# tests/test_terraform_contracts.py fails when they drift from ../main.tf.

data "aws_caller_identity" "this" {}

data "aws_partition" "this" {}

locals {
  name = var.name

  # The stack's names (../main.tf, docs/contracts.md).
  repository_name          = "${local.name}-trainer"
  cluster_name             = local.name
  task_family              = "${local.name}-trainer"
  function_name            = "${local.name}-trigger"
  artifacts_bucket_default = "${local.name}-artifacts-${local.account_id}-${var.region}"
  artifacts_bucket_name    = coalesce(var.artifacts_bucket_name, local.artifacts_bucket_default)
  stack_iam_path           = "/${local.name}/"
  # The stack's roles (../iam.tf, and ../ec2_capacity.tf's container instance role, which exists only
  # with GPU or Batch capacity): the only roles the apply role may create, change or pass.
  stack_role_names    = ["${local.name}-trainer-execution", "${local.name}-trainer-task", local.function_name, local.container_instance_t]
  stack_boundary_name = "${local.name}-stack-boundary"

  # The optional scale-out capacity's names (../ec2_capacity.tf, ../gpu.tf, ../batch.tf; off by
  # default). Same local names as the stack's, so the contract test compares them one by one.
  gpu_task_family      = "${local.task_family}-gpu"
  gpu_provider_name    = "${local.name}-gpu"
  batch_job_family     = "${local.task_family}-mnp"
  batch_queue_name     = "${local.name}-mnp"
  batch_environment    = "${local.name}-mnp"
  container_instance_t = "${local.name}-container-instance"
  # name_prefix of the GPU Auto Scaling group (../gpu.tf); AWS appends a timestamp and a counter.
  gpu_group_prefix = "${local.name}-gpu-"

  state_bucket_default = "${local.name}-tfstate-${local.account_id}-${var.region}"
  state_bucket_name    = coalesce(var.state_bucket_name, local.state_bucket_default)
  stack_state_key      = "pushtrain/stack.tfstate"
  bootstrap_state_key  = "pushtrain/bootstrap.tfstate"

  github_oidc_url = "token.actions.githubusercontent.com"

  # The `sub` claims each CI role trusts (docs/contracts.md). A job that names an environment
  # gets "repo:<owner>/<repo>:environment:<env>"; a pull request job gets ":pull_request"; a job
  # on main without an environment (the plan jobs of terraform-apply and destroy) ":ref:refs/heads/main".
  # A merge group's ref (gh-readonly-queue/main/pr-<n>-<sha>) differs every time, so its plan job
  # names the environment merge-queue, whose branch policy admits only gh-readonly-queue/main/*.
  role_subjects = {
    plan = [
      "repo:${var.github_repository}:pull_request",
      "repo:${var.github_repository}:ref:refs/heads/main",
      "repo:${var.github_repository}:environment:drift",
      "repo:${var.github_repository}:environment:merge-queue",
    ]
    apply   = ["repo:${var.github_repository}:environment:production"]
    image   = ["repo:${var.github_repository}:environment:ecr-push"]
    retrain = ["repo:${var.github_repository}:environment:retrain"]
    report  = ["repo:${var.github_repository}:environment:report"]
  }

  account_id = data.aws_caller_identity.this.account_id
  partition  = data.aws_partition.this.partition

  # ARN prefixes of the stack's resources, for the CI roles' policies.
  arn = {
    repository      = "arn:${local.partition}:ecr:${var.region}:${local.account_id}:repository/${local.repository_name}"
    function        = "arn:${local.partition}:lambda:${var.region}:${local.account_id}:function:${local.function_name}"
    artifacts       = "arn:${local.partition}:s3:::${local.artifacts_bucket_name}"
    cluster_tasks   = "arn:${local.partition}:ecs:${var.region}:${local.account_id}:task/${local.cluster_name}/*"
    stack_roles     = "arn:${local.partition}:iam::${local.account_id}:role${local.stack_iam_path}*"
    stack_role_list = [for role in local.stack_role_names : "arn:${local.partition}:iam::${local.account_id}:role${local.stack_iam_path}${role}"]
    # The roles a task or job runs with: the only ones a stack role (the trigger) ever passes.
    task_role_list = [for role in slice(local.stack_role_names, 0, 2) : "arn:${local.partition}:iam::${local.account_id}:role${local.stack_iam_path}${role}"]
    trigger_role   = "arn:${local.partition}:iam::${local.account_id}:role${local.stack_iam_path}${local.function_name}"
    state_bucket   = "arn:${local.partition}:s3:::${local.state_bucket_name}"
    stack_state    = "arn:${local.partition}:s3:::${local.state_bucket_name}/${local.stack_state_key}"
    stack_lockfile = "arn:${local.partition}:s3:::${local.state_bucket_name}/${local.stack_state_key}.tflock"
  }

  # ARNs of the optional scale-out resources, in the IAM service authorization reference's formats.
  # A launch template's ARN holds its generated id, so launch templates are scoped by the stack's tag.
  scale_out_arn = {
    gpu_task_definitions  = "arn:${local.partition}:ecs:${local.region_account}:task-definition/${local.gpu_task_family}:*"
    gpu_capacity_provider = "arn:${local.partition}:ecs:${local.region_account}:capacity-provider/${local.gpu_provider_name}"
    gpu_group             = "arn:${local.partition}:autoscaling:${local.region_account}:autoScalingGroup:*:autoScalingGroupName/${local.gpu_group_prefix}*"
    launch_templates      = "arn:${local.partition}:ec2:${local.region_account}:launch-template/*"
    placement_group       = "arn:${local.partition}:ec2:${local.region_account}:placement-group/${local.batch_environment}"
    compute_environment   = "arn:${local.partition}:batch:${local.region_account}:compute-environment/${local.batch_environment}"
    job_queue             = "arn:${local.partition}:batch:${local.region_account}:job-queue/${local.batch_queue_name}"
    job_definition        = "arn:${local.partition}:batch:${local.region_account}:job-definition/${local.batch_job_family}"
    job_definitions       = "arn:${local.partition}:batch:${local.region_account}:job-definition/${local.batch_job_family}:*"
    jobs                  = "arn:${local.partition}:batch:${local.region_account}:job/*"
    instance_profile      = "arn:${local.partition}:iam::${local.account_id}:instance-profile${local.stack_iam_path}${local.container_instance_t}"
    container_instance    = "arn:${local.partition}:iam::${local.account_id}:role${local.stack_iam_path}${local.container_instance_t}"
    # AWS's public parameters of the ECS-optimized AMIs (no account in their ARN).
    ecs_ami_parameters = "arn:${local.partition}:ssm:${var.region}::parameter/aws/service/ecs/*"
    instances          = "arn:${local.partition}:ec2:${local.region_account}:instance/*"
    volumes            = "arn:${local.partition}:ec2:${local.region_account}:volume/*"
    # Everything a launch from aws_launch_template.container_instance["gpu"] touches, for EC2 Auto Scaling's launch check.
    launch_resources = [
      "arn:${local.partition}:ec2:${var.region}::image/*",
      "arn:${local.partition}:ec2:${local.region_account}:instance/*",
      "arn:${local.partition}:ec2:${local.region_account}:network-interface/*",
      "arn:${local.partition}:ec2:${local.region_account}:security-group/*",
      "arn:${local.partition}:ec2:${local.region_account}:subnet/*",
      "arn:${local.partition}:ec2:${local.region_account}:volume/*",
    ]
  }

  # Reads of the optional scale-out resources that have a resource type (a refresh makes them; plan
  # and apply alike), one statement per service so each names only its own resources.
  scale_out_reads = {
    # data.aws_ssm_parameter.ecs_gpu_ami: the current ECS GPU-optimized AMI.
    ReadEcsAmiParameters = {
      actions   = ["ssm:GetParameter"]
      resources = [local.scale_out_arn.ecs_ami_parameters]
    }
    # aws_iam_instance_profile.container_instance.
    ReadContainerInstanceProfile = {
      actions   = ["iam:GetInstanceProfile", "iam:ListInstanceProfileTags"]
      resources = [local.scale_out_arn.instance_profile]
    }
    # aws_ecs_capacity_provider.gpu (DescribeCapacityProviders has the capacity-provider type) and
    # aws_ecs_task_definition.gpu's tags.
    ReadGpuCapacityProvider = {
      actions   = ["ecs:DescribeCapacityProviders", "ecs:ListTagsForResource"]
      resources = [local.scale_out_arn.gpu_capacity_provider, local.scale_out_arn.gpu_task_definitions]
    }
    # aws_batch_compute_environment.mnp, aws_batch_job_queue.mnp, aws_batch_job_definition.mnp: tags.
    ReadBatchTags = {
      actions   = ["batch:ListTagsForResource"]
      resources = [local.scale_out_arn.compute_environment, local.scale_out_arn.job_queue, local.scale_out_arn.job_definitions]
    }
  }

  # Every resource of the stack by ARN pattern, for the plan (read) and apply (manage) roles.
  region_account = "${var.region}:${local.account_id}"
  stack_resources_by_service = {
    cloudwatch_alarms    = "arn:${local.partition}:cloudwatch:${local.region_account}:alarm:${local.name}-*"
    ecr_repository       = local.arn.repository
    ecs_cluster          = "arn:${local.partition}:ecs:${local.region_account}:cluster/${local.cluster_name}"
    ecs_task_definitions = "arn:${local.partition}:ecs:${local.region_account}:task-definition/${local.task_family}:*"
    events_rules         = "arn:${local.partition}:events:${local.region_account}:rule/${local.name}-*"
    lambda_function      = local.arn.function
    lambda_qualified     = "${local.arn.function}:*"
    logs_trainer         = "arn:${local.partition}:logs:${local.region_account}:log-group:/ecs/${local.task_family}"
    logs_trainer_streams = "arn:${local.partition}:logs:${local.region_account}:log-group:/ecs/${local.task_family}:*"
    logs_trigger         = "arn:${local.partition}:logs:${local.region_account}:log-group:/aws/lambda/${local.function_name}"
    logs_trigger_streams = "arn:${local.partition}:logs:${local.region_account}:log-group:/aws/lambda/${local.function_name}:*"
    sns_topics           = "arn:${local.partition}:sns:${local.region_account}:${local.name}-*"
    sqs_queues           = "arn:${local.partition}:sqs:${local.region_account}:${local.name}-*"
    s3_artifacts         = local.arn.artifacts
    iam_stack_roles      = local.arn.stack_roles
    kms_keys             = "arn:${local.partition}:kms:${local.region_account}:key/*"
  }

  # The clusters whose container instances the ECS agent of the stack's GPU and Batch capacity may run
  # on: the stack's cluster, and the one AWS Batch creates for the stack's compute environment.
  stack_agent_clusters = [
    local.stack_resources_by_service.ecs_cluster,
    "arn:${local.partition}:ecs:${local.region_account}:cluster/${local.batch_environment}_Batch_*",
  ]
  stack_resources = values(local.stack_resources_by_service)

  # Read calls on the stack's own resources, what a refresh makes (plan and apply alike).
  # s3:ListBucket: the provider reads the artifacts bucket with HeadBucket, which needs it.
  stack_read_actions = [
    "cloudwatch:ListTagsForResource",
    "ecr:DescribeRepositories",
    "ecr:GetLifecyclePolicy",
    "ecr:GetRepositoryPolicy",
    "ecr:ListTagsForResource",
    "ecs:DescribeClusters",
    "ecs:ListTagsForResource",
    "events:DescribeRule",
    "events:ListTagsForResource",
    "events:ListTargetsByRule",
    "iam:GetRole",
    "iam:GetRolePolicy",
    "iam:ListAttachedRolePolicies",
    "iam:ListRolePolicies",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListResourceTags",
    "lambda:GetFunction",
    "lambda:GetFunctionCodeSigningConfig",
    "lambda:GetFunctionConcurrency",
    "lambda:GetFunctionConfiguration",
    "lambda:GetFunctionEventInvokeConfig",
    "lambda:GetFunctionRecursionConfig",
    "lambda:GetPolicy",
    "lambda:ListTags",
    "lambda:ListVersionsByFunction",
    "logs:ListTagsForResource",
    "logs:ListTagsLogGroup",
    "s3:GetAccelerateConfiguration",
    "s3:GetBucketAcl",
    "s3:GetBucketCORS",
    "s3:GetBucketLocation",
    "s3:GetBucketLogging",
    "s3:GetBucketObjectLockConfiguration",
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketRequestPayment",
    "s3:GetBucketTagging",
    "s3:GetBucketVersioning",
    "s3:GetBucketWebsite",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
    "s3:GetReplicationConfiguration",
    "s3:ListBucket",
    "s3:ListTagsForResource",
    "sns:GetTopicAttributes",
    "sns:ListTagsForResource",
    "sqs:GetQueueAttributes",
    "sqs:ListQueueTags",
  ]

  # The apply role's writes on the stack's own resources: the provider's create, update, tag and
  # delete calls for the resource types in ../*.tf, named one by one (no service-wide wildcards).
  stack_write_actions = [
    "cloudwatch:DeleteAlarms",
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:TagResource",
    "cloudwatch:UntagResource",
    "ecr:BatchDeleteImage",
    "ecr:CreateRepository",
    "ecr:DeleteLifecyclePolicy",
    "ecr:DeleteRepository",
    "ecr:ListImages",
    "ecr:PutImageScanningConfiguration",
    "ecr:PutImageTagMutability",
    "ecr:PutLifecyclePolicy",
    "ecr:TagResource",
    "ecr:UntagResource",
    "ecs:CreateCluster",
    "ecs:DeleteCluster",
    "ecs:PutClusterCapacityProviders",
    "ecs:RegisterTaskDefinition",
    "ecs:TagResource",
    "ecs:UntagResource",
    "ecs:UpdateCluster",
    "ecs:UpdateClusterSettings",
    "events:DeleteRule",
    "events:DisableRule",
    "events:EnableRule",
    "events:PutRule",
    "events:PutTargets",
    "events:RemoveTargets",
    "events:TagResource",
    "events:UntagResource",
    "lambda:AddPermission",
    "lambda:CreateFunction",
    "lambda:DeleteFunction",
    "lambda:DeleteFunctionConcurrency",
    "lambda:DeleteFunctionEventInvokeConfig",
    "lambda:PutFunctionConcurrency",
    "lambda:PutFunctionEventInvokeConfig",
    "lambda:RemovePermission",
    "lambda:TagResource",
    "lambda:UntagResource",
    "lambda:UpdateFunctionCode",
    "lambda:UpdateFunctionConfiguration",
    "lambda:UpdateFunctionEventInvokeConfig",
    "logs:CreateLogGroup",
    "logs:DeleteLogGroup",
    "logs:DeleteRetentionPolicy",
    "logs:PutRetentionPolicy",
    "logs:TagLogGroup",
    "logs:TagResource",
    "logs:UntagLogGroup",
    "logs:UntagResource",
    "sns:CreateTopic",
    "sns:DeleteTopic",
    "sns:SetTopicAttributes",
    "sns:Subscribe",
    "sns:TagResource",
    "sns:UntagResource",
    "sqs:CreateQueue",
    "sqs:DeleteQueue",
    "sqs:GetQueueUrl",
    "sqs:SetQueueAttributes",
    "sqs:TagQueue",
    "sqs:UntagQueue",
  ]

  # Read calls that have no resource type (only "*"); both plan and apply refresh the stack with them.
  describe_actions = [
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInternetGateways",
    "ec2:DescribeNetworkAcls",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribePrefixLists",
    "ec2:DescribeRouteTables",
    "ec2:DescribeSecurityGroupRules",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcEndpointServices",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcs",
    "ecs:DescribeTaskDefinition",
    "kms:ListAliases",
    "logs:DescribeLogGroups",
    # The optional scale-out capacity (../gpu.tf, ../batch.tf): Auto Scaling groups (the provider waits
    # on scaling activities after a create), launch templates, placement groups and Batch's objects.
    "autoscaling:DescribeAutoScalingGroups",
    "autoscaling:DescribeScalingActivities",
    "batch:DescribeComputeEnvironments",
    "batch:DescribeJobDefinitions",
    "batch:DescribeJobQueues",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribePlacementGroups",
  ]

  # The stack's network (../network.tf), for the apply role. Each create call -> the resource type it
  # creates; the provider tags every one of them on create (default_tags: Project = <name>).
  network_creates = {
    CreateVpc             = "vpc"
    CreateSubnet          = "subnet"
    CreateRouteTable      = "route-table"
    CreateSecurityGroup   = "security-group"
    CreateInternetGateway = "internet-gateway"
    CreateVpcEndpoint     = "vpc-endpoint"
  }
  network_resource_types = ["vpc", "subnet", "route-table", "security-group", "internet-gateway", "vpc-endpoint", "security-group-rule"]
  # Calls on resources that carry the stack's tag (a create call's parents included: CreateSubnet is
  # also authorized against its VPC).
  network_changes = [
    "ec2:AssociateRouteTable",
    "ec2:AttachInternetGateway",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:CreateRoute",
    "ec2:CreateRouteTable",
    "ec2:CreateSecurityGroup",
    "ec2:CreateSubnet",
    "ec2:CreateTags",
    "ec2:CreateVpcEndpoint",
    "ec2:DeleteInternetGateway",
    "ec2:DeleteRoute",
    "ec2:DeleteRouteTable",
    "ec2:DeleteSecurityGroup",
    "ec2:DeleteSubnet",
    "ec2:DeleteTags",
    "ec2:DeleteVpc",
    "ec2:DeleteVpcEndpoints",
    "ec2:DetachInternetGateway",
    "ec2:DisassociateRouteTable",
    "ec2:ModifySecurityGroupRules",
    "ec2:ModifySubnetAttribute",
    "ec2:ModifyVpcAttribute",
    "ec2:ModifyVpcEndpoint",
    "ec2:ReplaceRoute",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:UpdateSecurityGroupRuleDescriptionsEgress",
    "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
  ]
  security_group_rule_changes = [
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:ModifySecurityGroupRules",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupIngress",
    "ec2:UpdateSecurityGroupRuleDescriptionsEgress",
    "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
  ]

  # As in the stack, our tags win over var.tags.
  tags = merge(var.tags, {
    Project   = local.name
    ManagedBy = "terraform"
    Stack     = "pushtrain-bootstrap"
  })
}
