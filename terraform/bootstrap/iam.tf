# The five CI roles (../../docs/contracts.md, "GitHub OIDC roles"). Each trusts GitHub's OIDC
# provider for exactly its `sub` claims with `aud = sts.amazonaws.com`, and is allowed only what
# its workflow does:
#   plan     terraform plan (pull requests, the scheduled drift check): read the stack, read state, take the lock
#   apply    terraform apply and destroy of the stack (environment "production")
#   image    push the trainer image to its one repository (environment "ecr-push")
#   retrain  invoke the trigger, read the run's record and report (environment "retrain")
#   report   read-only: find a pushed image's run, read its record and report (environment "report")

# --- trust ------------------------------------------------------------------------------------

data "aws_iam_policy_document" "github_trust" {
  # iam-lint:skip=MALFORMED: a trust policy names no Resource (the role it is attached to is the resource); parliament reads every document as an identity policy.
  # iam-lint:skip=UNKNOWN_FEDERATION_SOURCE: GitHub's OIDC provider (token.actions.githubusercontent.com), which parliament's short list of identity providers does not include.
  for_each = local.role_subjects

  statement {
    sid     = "GitHubActionsOidc"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.github_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:aud"
      values   = ["sts.amazonaws.com"]
    }

    # StringEquals, never StringLike: a wildcard here would let any branch or fork's workflow in.
    condition {
      test     = "StringEquals"
      variable = "${local.github_oidc_url}:sub"
      values   = each.value
    }
  }
}

resource "aws_iam_role" "github" {
  for_each = local.role_subjects

  name                 = "${local.name}-github-${each.key}"
  description          = "GitHub Actions (${var.github_repository}) ${each.key} role for pushtrain"
  assume_role_policy   = data.aws_iam_policy_document.github_trust[each.key].json
  max_session_duration = 3600
}

# Each role's permissions as one inline policy, except the apply role's: IAM allows 10,240 characters
# of inline policy per role (all its inline policies together), and the apply role's need about twice
# that. Its permissions are customer-managed policies by concern (below), each within the 6,144
# characters of one managed policy and 10 attached per role ("IAM and AWS STS quotas"); `make lint`
# (scripts/lint.py --only limits) checks all three on the rendered documents.
resource "aws_iam_role_policy" "github" {
  for_each = {
    plan    = data.aws_iam_policy_document.plan.json
    image   = data.aws_iam_policy_document.image.json
    retrain = data.aws_iam_policy_document.retrain.json
    report  = data.aws_iam_policy_document.report.json
  }

  name   = each.key
  role   = aws_iam_role.github[each.key].id
  policy = each.value
}

# --- plan: read-only --------------------------------------------------------------------------

data "aws_iam_policy_document" "plan" {
  # iam-lint:skip=RESOURCE_MISMATCH(ssm:GetParameter,ssm:GetParameters): ssm:GetParameter on AWS's public parameters have no account in their ARN ("arn:aws:ssm:<region>::parameter/aws/service/..."), which parliament's pattern requires.
  # checkov:skip=CKV_AWS_356: Describe/List calls of EC2, ECS, Logs and KMS and sns:GetSubscriptionAttributes have no resource type and can only be granted on "*"; those statements hold only read actions.
  statement {
    # Refreshing state reads every resource of the stack; these calls cannot be scoped.
    sid       = "DescribeStack"
    actions   = local.describe_actions
    resources = ["*"]
  }

  statement {
    # Reads that do have a resource type (IAM service authorization reference).
    sid       = "DescribeStackScoped"
    actions   = ["cloudwatch:DescribeAlarms", "ec2:DescribeVpcAttribute"]
    resources = [local.stack_resources_by_service.cloudwatch_alarms, "arn:${local.partition}:ec2:${local.region_account}:vpc/*"]
  }

  statement {
    sid       = "ReadStackResources"
    actions   = local.stack_read_actions
    resources = local.stack_resources
  }

  # The optional scale-out capacity (../gpu.tf, ../batch.tf, ../ec2_capacity.tf): what a refresh reads
  # of it beyond the Describe calls of DescribeStack.
  dynamic "statement" {
    for_each = local.scale_out_reads

    content {
      sid       = statement.key
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }

  statement {
    # The preview workflow shows the deployed champion's accuracy on pull requests: the pointer only.
    sid       = "ReadChampion"
    actions   = ["s3:GetObject"]
    resources = ["${local.arn.artifacts}/models/*/champion.json"]
  }

  statement {
    # No resource type: SNS authorizes it on "*".
    sid       = "ReadSubscriptions"
    actions   = ["sns:GetSubscriptionAttributes"]
    resources = ["*"]
  }

  statement {
    sid       = "ReadStackState"
    actions   = ["s3:GetObject"]
    resources = [local.arn.stack_state]
  }

  statement {
    sid       = "ListStateBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.arn.state_bucket]
  }

  statement {
    # `terraform plan` takes the state lock too (Terraform's default): it creates "<key>.tflock" with
    # If-None-Match and deletes it when done. S3 cannot limit a DeleteObject to the lock the caller
    # wrote, so this role could also remove a running apply's lock; what it cannot do is write the
    # state. A plan workflow run with `-lock=false` would need none of this statement.
    sid       = "StateLock"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.arn.stack_lockfile]
  }
}

# --- apply: manage the stack ------------------------------------------------------------------

# The network: create only with the stack's tag, change only what carries it.
data "aws_iam_policy_document" "apply_network" {
  # iam-lint:skip=RESOURCE_MISMATCH: parliament reads one statement at a time; a create call's parent (CreateSubnet's VPC) and a rule's security group are granted by StackNetwork, on their tag, on purpose not in the same statement.
  # checkov:skip=CKV_AWS_356: the one "*" is Route 53's private-DNS association, which has no ARN the account can know (an AWS-owned hosted zone) and is allowed only through EC2 (aws:ViaAWSService).
  # checkov:skip=CKV_AWS_111: the one unconstrained write is that association, only through EC2 (aws:ViaAWSService).

  # --- network: create only with the stack's tag, change only what carries it -------------------
  # One statement per create call, because a create call is also authorized against its parents
  # (CreateSubnet against the VPC): a statement listing the VPC for CreateVpc under a request-tag
  # condition would also let CreateSubnet into any VPC. The parents are authorized by their tag below.
  dynamic "statement" {
    for_each = local.network_creates

    content {
      sid       = "Network${statement.key}"
      actions   = ["ec2:${statement.key}"]
      resources = ["arn:${local.partition}:ec2:${local.region_account}:${statement.value}/*"]

      condition {
        test     = "StringEquals"
        variable = "aws:RequestTag/Project"
        values   = [local.name]
      }
    }
  }

  statement {
    # Tags set by a create call (TagSpecifications) need ec2:CreateTags, granted only as part of it.
    sid       = "NetworkTagOnCreate"
    actions   = ["ec2:CreateTags"]
    resources = [for type in local.network_resource_types : "arn:${local.partition}:ec2:${local.region_account}:${type}/*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = concat(keys(local.network_creates), ["AuthorizeSecurityGroupEgress", "AuthorizeSecurityGroupIngress"])
    }
  }

  statement {
    # Everything else the provider does to the network acts on resources the stack created and
    # tagged (Project = <name>, the provider's default_tags): the VPC, subnets, route table, gateway,
    # endpoints and security groups. A VPC, security group or route table of anyone else is out of reach.
    sid       = "StackNetwork"
    actions   = local.network_changes
    resources = [for type in local.network_resource_types : "arn:${local.partition}:ec2:${local.region_account}:${type}/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # A security group rule is a resource of its own when a call names one by id; the call is also
    # authorized against the rule's security group, which must carry the stack's tag (above).
    sid       = "StackSecurityGroupRules"
    actions   = local.security_group_rule_changes
    resources = ["arn:${local.partition}:ec2:${local.region_account}:security-group-rule/*"]
  }

  statement {
    # Interface endpoints with private DNS associate an AWS-owned private hosted zone, whose id the
    # account cannot know, with the VPC. EC2 makes that call while creating the endpoint; the role
    # may not make it itself. Route 53 is global: no region condition.
    sid       = "EndpointPrivateDns"
    actions   = ["route53:AssociateVPCWithHostedZone"]
    resources = ["*"]

    condition {
      test     = "Bool"
      variable = "aws:ViaAWSService"
      values   = ["true"]
    }
  }
}

# The reads of a refresh (before every apply): what a plan reads.
data "aws_iam_policy_document" "apply_refresh" {
  # iam-lint:skip=RESOURCE_MISMATCH: the ECS GPU AMI parameter is AWS's public one (arn:aws:ssm:<region>::parameter/aws/service/...), which has no account; parliament expects one.
  # checkov:skip=CKV_AWS_356: only reads without a resource type (Describe/List calls, sns:GetSubscriptionAttributes) are on "*", each statement naming its actions.

  statement {
    sid       = "DescribeStack"
    actions   = local.describe_actions
    resources = ["*"]
  }

  statement {
    # Reads that do have a resource type (IAM service authorization reference).
    sid       = "DescribeStackScoped"
    actions   = ["cloudwatch:DescribeAlarms", "ec2:DescribeVpcAttribute"]
    resources = [local.stack_resources_by_service.cloudwatch_alarms, "arn:${local.partition}:ec2:${local.region_account}:vpc/*"]
  }

  statement {
    # A refresh before every apply reads what a plan reads.
    sid       = "ReadStackResources"
    actions   = local.stack_read_actions
    resources = local.stack_resources
  }

  statement {
    sid       = "ReadSubscriptions"
    actions   = ["sns:GetSubscriptionAttributes"]
    resources = ["*"]
  }

  dynamic "statement" {
    # A refresh of the optional scale-out capacity reads what a plan reads (above, plan).
    for_each = local.scale_out_reads

    content {
      sid       = statement.key
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}

# The stack's services (ECR, ECS, Lambda, EventBridge, SNS, SQS, logs, alarms), the artifacts
# bucket's configuration, the notifications key, and the state.
data "aws_iam_policy_document" "apply_services" {
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: deploying the stack is writing its resource policies (bucket policy, Lambda permissions, topic and queue policies) and creating its key; terraform/README.md lists them as what the production environment's reviewers guard.
  # iam-lint:skip=RESOURCE_POLICY_PRIVILEGE_ESCALATION: s3:PutBucketPolicy and s3:PutLifecycleConfiguration on the artifacts bucket could reach objects the role cannot; inherent to managing the bucket, guarded by the production environment's reviewers (terraform/README.md).
  # iam-lint:skip=PRIVILEGE_ESCALATION: lambda:UpdateFunctionCode runs new code as the trigger role; deploying the trigger is that call, guarded by the production environment's reviewers (terraform/README.md).
  # checkov:skip=CKV_AWS_356: only calls without a resource type are on "*" (ecs:DeregisterTaskDefinition, kms:CreateKey, the SNS subscription calls), with a region or tag condition.
  # checkov:skip=CKV_AWS_111: the "*" writes are those without a resource type: ecs:DeregisterTaskDefinition (region-conditioned), kms:CreateKey (only with the stack's tag), sns:SetSubscriptionAttributes/Unsubscribe (region-conditioned).

  statement {
    # DeregisterTaskDefinition has no resource type; RegisterTaskDefinition has (task-definition) and
    # is scoped to the trainer family in StackServices.
    sid       = "DeregisterTaskDefinitions"
    actions   = ["ecs:DeregisterTaskDefinition"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    # The subscription calls have no resource type: SNS authorizes them on "*" (the service reference
    # lists none), so a grant on the topic's ARN would never match.
    sid       = "TopicSubscriptions"
    actions   = ["sns:SetSubscriptionAttributes", "sns:Unsubscribe"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    # Exactly the create, update, tag and delete calls the provider makes for the stack's resource
    # types, on the resources the stack names (the bucket, roles and key have their own statements).
    sid       = "StackServices"
    actions   = local.stack_write_actions
    resources = [for key, arn in local.stack_resources_by_service : arn if !contains(["s3_artifacts", "iam_stack_roles", "kms_keys"], key)]
  }

  statement {
    # Bucket configuration only: the apply role never reads or writes the artifacts themselves. The
    # provider (6.23 and later) tags a bucket on create through S3's TagResource API.
    sid = "ArtifactsBucketConfiguration"
    actions = [
      "s3:CreateBucket",
      "s3:DeleteBucket",
      "s3:DeleteBucketPolicy",
      "s3:ListTagsForResource",
      "s3:PutBucketOwnershipControls",
      "s3:PutBucketPolicy",
      "s3:PutBucketPublicAccessBlock",
      "s3:PutBucketTagging",
      "s3:PutBucketVersioning",
      "s3:PutEncryptionConfiguration",
      "s3:PutLifecycleConfiguration",
      "s3:TagResource",
      "s3:UntagResource",
    ]
    resources = [local.arn.artifacts]
  }

  statement {
    # Creating the notifications key: CreateKey has no resource type; its tags need kms:TagResource,
    # both only with the stack's tag in the request. Nothing grants anything by a key's tag (KMS
    # applies a tag change to authorization up to five minutes late, "ABAC for AWS KMS"), so tagging
    # some other key Project=<name> gains the role nothing.
    sid       = "CreateStackKey"
    actions   = ["kms:CreateKey"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [local.name]
    }
  }

  statement {
    sid       = "TagStackKeyOnCreate"
    actions   = ["kms:TagResource"]
    resources = [local.stack_resources_by_service.kms_keys]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # Managing the key after CreateKey (rotation, alias, policy, deletion) is granted by the key's own
    # policy, which names this role (../monitoring.tf): in force from the moment the key exists, with
    # no tag to wait for. An alias call is authorized on the alias (here, by its name) and on the key
    # (by the key policy).
    sid       = "StackKeyAlias"
    actions   = ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
    resources = ["arn:${local.partition}:kms:${local.region_account}:alias/${local.name}-*", local.stack_resources_by_service.kms_keys]
  }

  statement {
    sid       = "StackState"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = [local.arn.stack_state]
  }

  statement {
    sid       = "ListStateBucket"
    actions   = ["s3:ListBucket"]
    resources = [local.arn.state_bucket]
  }

  statement {
    sid       = "StateLock"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.arn.stack_lockfile]
  }
}

# The stack's roles: created and widened only within the boundary, passed only to their services.
data "aws_iam_policy_document" "apply_roles" {
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: the stack's three roles, created and widened only with the stack boundary attached, and passed only to their services; terraform/README.md lists them as what the production environment's reviewers guard.

  statement {
    # Every write that could widen a stack role requires the role to carry the stack boundary: a
    # role the apply role creates or edits can never do more than stack_boundary allows, whatever
    # its inline policy says (so the apply role cannot make itself an administrator through one).
    # Only the three roles the stack names, under its path.
    sid = "StackRolesWithinBoundary"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRolePolicy",
      "iam:PutRolePermissionsBoundary",
      "iam:PutRolePolicy",
    ]
    resources = local.arn.stack_role_list

    condition {
      test     = "ArnEquals"
      variable = "iam:PermissionsBoundary"
      values   = [aws_iam_policy.stack_boundary.arn]
    }
  }

  statement {
    # No iam:UpdateAssumeRolePolicy: a stack role's trust is fixed at its creation (CreateRole, within
    # the boundary). Changing it would let this role make any stack role assumable by a principal of
    # its choosing; a change of trust is an administrator's apply (README, "Upgrading").
    sid = "StackRoles"
    actions = [
      "iam:DeleteRole",
      "iam:GetRole",
      "iam:GetRolePolicy",
      "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole",
      "iam:ListRolePolicies",
      "iam:TagRole",
      "iam:UntagRole",
      "iam:UpdateRole",
      "iam:UpdateRoleDescription",
    ]
    resources = local.arn.stack_role_list
  }

  statement {
    # The first ECS cluster in an account makes ECS create its service-linked role (awsvpc networking).
    sid       = "EcsServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["ecs.amazonaws.com"]
    }
  }

  statement {
    # The trainer roles go to ECS tasks (the task definitions) and to AWS Batch
    # (aws_batch_job_definition.mnp names them).
    sid       = "PassTrainerRoles"
    actions   = ["iam:PassRole"]
    resources = local.arn.task_role_list

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["batch.amazonaws.com", "ecs-tasks.amazonaws.com"]
    }
  }

  statement {
    # The trigger's role goes to Lambda only.
    sid       = "PassTriggerRole"
    actions   = ["iam:PassRole"]
    resources = [local.arn.trigger_role]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["lambda.amazonaws.com"]
    }
  }
}

# The optional scale-out capacity (../gpu.tf, ../batch.tf, ../ec2_capacity.tf; off by default).
data "aws_iam_policy_document" "apply_scale_out" {
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: the container instance profile of the stack's one container-instance role (within the boundary), passing that role to EC2 and Batch, and the Auto Scaling and Batch service-linked roles, each by its fixed name.
  # iam-lint:skip=PRIVILEGE_ESCALATION: ec2:RunInstances (the launch check of EC2 Auto Scaling, only from the stack's tagged launch templates) with iam:PassRole of the container-instance role: an instance gets only that role, which the boundary bounds.
  # iam-lint:skip=RESOURCE_MISMATCH: parliament reads one statement at a time; a launch's other resources are granted only through a launch template (GpuGroupLaunchCheckResources), the template itself by its tag (GpuGroupLaunchCheckTemplate).

  # --- optional scale-out capacity (../gpu.tf, ../batch.tf, ../ec2_capacity.tf; off by default) ------
  # Each statement names the resource that needs it. Nothing here is used while var.gpu.enabled and
  # var.batch.enabled are false, and each grant is scoped to the stack's names (or, for launch
  # templates, whose ARN holds a generated id, to the stack's tag).

  statement {
    # aws_iam_instance_profile.container_instance: EC2 hands the container instance role to the GPU and
    # Batch instances through it. AddRoleToInstanceProfile also needs iam:PassRole (below).
    sid = "ContainerInstanceProfile"
    actions = [
      "iam:AddRoleToInstanceProfile",
      "iam:CreateInstanceProfile",
      "iam:DeleteInstanceProfile",
      "iam:RemoveRoleFromInstanceProfile",
      "iam:TagInstanceProfile",
      "iam:UntagInstanceProfile",
    ]
    resources = [local.scale_out_arn.instance_profile]
  }

  statement {
    # The container instance role goes to EC2 (adding it to its instance profile; the launch check of
    # aws_autoscaling_group.gpu, whose launch template names the profile) and to AWS Batch (the
    # instance role of aws_batch_compute_environment.mnp).
    sid       = "PassContainerInstanceRole"
    actions   = ["iam:PassRole"]
    resources = [local.scale_out_arn.container_instance]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["batch.amazonaws.com", "ec2.amazonaws.com"]
    }
  }

  statement {
    # aws_ecs_task_definition.gpu: the GPU family, registered (and tagged on create) like the Fargate
    # one; ecs:DeregisterTaskDefinition is granted on "*" above (it has no resource type).
    sid       = "GpuTaskDefinitions"
    actions   = ["ecs:RegisterTaskDefinition", "ecs:TagResource", "ecs:UntagResource"]
    resources = [local.scale_out_arn.gpu_task_definitions]
  }

  statement {
    # aws_ecs_capacity_provider.gpu. aws_ecs_cluster_capacity_providers.this adds it to the cluster
    # with ecs:PutClusterCapacityProviders, authorized on the cluster (StackServices).
    sid = "GpuCapacityProvider"
    actions = [
      "ecs:CreateCapacityProvider",
      "ecs:DeleteCapacityProvider",
      "ecs:TagResource",
      "ecs:UntagResource",
      "ecs:UpdateCapacityProvider",
    ]
    resources = [local.scale_out_arn.gpu_capacity_provider]
  }

  statement {
    # aws_autoscaling_group.gpu (name_prefix "<name>-gpu-"; default_tags do not reach a group, so it is
    # scoped by name): created with its AmazonECSManaged tag, updated, and on destroy drained (its
    # instances' scale-in protection removed, capacity set to 0) and deleted.
    sid = "GpuAutoScalingGroup"
    actions = [
      "autoscaling:CreateAutoScalingGroup",
      "autoscaling:CreateOrUpdateTags",
      "autoscaling:DeleteAutoScalingGroup",
      "autoscaling:DeleteTags",
      "autoscaling:SetInstanceProtection",
      "autoscaling:UpdateAutoScalingGroup",
    ]
    resources = [local.scale_out_arn.gpu_group]
  }

  statement {
    # aws_launch_template.container_instance (gpu, mnp): created only with the stack's tag (the
    # provider's default_tags, sent as the template's TagSpecifications).
    sid       = "CreateLaunchTemplates"
    actions   = ["ec2:CreateLaunchTemplate"]
    resources = [local.scale_out_arn.launch_templates]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # aws_launch_template.container_instance after the create: a new version on each change (made the
    # default, update_default_version), tag changes, and the delete, only while they carry the tag.
    sid = "StackLaunchTemplates"
    actions = [
      "ec2:CreateLaunchTemplateVersion",
      "ec2:CreateTags",
      "ec2:DeleteLaunchTemplate",
      "ec2:DeleteTags",
      "ec2:ModifyLaunchTemplate",
    ]
    resources = [local.scale_out_arn.launch_templates]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # aws_placement_group.batch, by its name (the ARN holds it), created with the stack's tag ...
    sid       = "CreateBatchPlacementGroup"
    actions   = ["ec2:CreatePlacementGroup"]
    resources = [local.scale_out_arn.placement_group]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # ... and retagged or deleted while it carries it, like the network.
    sid       = "BatchPlacementGroup"
    actions   = ["ec2:CreateTags", "ec2:DeletePlacementGroup", "ec2:DeleteTags"]
    resources = [local.scale_out_arn.placement_group]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # Tags set by a create call: the launch templates' and the placement group's (default_tags), and
    # the instance tags of aws_launch_template.container_instance["gpu"], which EC2 Auto Scaling checks the caller may set
    # when aws_autoscaling_group.gpu is created or updated from the template.
    sid       = "ScaleOutTagOnCreate"
    actions   = ["ec2:CreateTags"]
    resources = [local.scale_out_arn.launch_templates, local.scale_out_arn.placement_group, local.scale_out_arn.instances, local.scale_out_arn.volumes]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateLaunchTemplate", "CreatePlacementGroup", "RunInstances"]
    }
  }

  statement {
    # aws_autoscaling_group.gpu: creating or updating a group from a launch template checks that the
    # caller may launch from it (EC2 Auto Scaling user guide, "API permissions": ec2:RunInstances);
    # the group's service-linked role launches the instances. Only from a template with the stack's tag ...
    sid       = "GpuGroupLaunchCheckTemplate"
    actions   = ["ec2:RunInstances"]
    resources = [local.scale_out_arn.launch_templates]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # ... and for the launch's other resources only through a launch template: a RunInstances call
    # without one matches no statement.
    sid       = "GpuGroupLaunchCheckResources"
    actions   = ["ec2:RunInstances"]
    resources = local.scale_out_arn.launch_resources

    condition {
      test     = "ArnLike"
      variable = "ec2:LaunchTemplate"
      values   = [local.scale_out_arn.launch_templates]
    }
  }

  statement {
    # aws_batch_compute_environment.mnp: managed, on EC2, with the Batch service-linked role (below).
    sid = "BatchComputeEnvironment"
    actions = [
      "batch:CreateComputeEnvironment",
      "batch:DeleteComputeEnvironment",
      "batch:TagResource",
      "batch:UntagResource",
      "batch:UpdateComputeEnvironment",
    ]
    resources = [local.scale_out_arn.compute_environment]
  }

  statement {
    # aws_batch_job_queue.mnp: CreateJobQueue and UpdateJobQueue are also authorized on the compute
    # environment the queue orders (the statement above names it for them too).
    sid = "BatchJobQueue"
    actions = [
      "batch:CreateJobQueue",
      "batch:DeleteJobQueue",
      "batch:TagResource",
      "batch:UntagResource",
      "batch:UpdateJobQueue",
    ]
    resources = [local.scale_out_arn.job_queue, local.scale_out_arn.compute_environment]
  }

  statement {
    # aws_batch_job_definition.mnp: a revision per change, the old one deregistered (replace, destroy).
    # Its roles are passed to batch.amazonaws.com (PassTrainerRoles).
    sid = "BatchJobDefinitions"
    actions = [
      "batch:DeregisterJobDefinition",
      "batch:RegisterJobDefinition",
      "batch:TagResource",
      "batch:UntagResource",
    ]
    resources = [local.scale_out_arn.job_definition, local.scale_out_arn.job_definitions]
  }

  statement {
    # aws_autoscaling_group.gpu: the account's first group makes EC2 Auto Scaling create its
    # service-linked role. Not EC2 Spot's: this role never requests Spot instances itself (README).
    sid       = "AutoScalingServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["autoscaling.amazonaws.com"]
    }
  }

  statement {
    # aws_batch_compute_environment.mnp names no service role: Batch uses, and on the account's first
    # compute environment creates, its service-linked role.
    sid       = "BatchServiceLinkedRole"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["arn:${local.partition}:iam::${local.account_id}:role/aws-service-role/batch.amazonaws.com/AWSServiceRoleForBatch"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["batch.amazonaws.com"]
    }
  }
}

# The apply role's policies, one per concern: what may the apply role do to the network, to the
# stack's services, to its roles, to the optional scale-out capacity, and what it reads on a refresh.
locals {
  apply_policies = {
    network   = { document = data.aws_iam_policy_document.apply_network.json, what = "the stack's network (create with its tag, change what carries it)" }
    refresh   = { document = data.aws_iam_policy_document.apply_refresh.json, what = "the reads of a refresh" }
    services  = { document = data.aws_iam_policy_document.apply_services.json, what = "the stack's services, artifacts bucket configuration, key and state" }
    roles     = { document = data.aws_iam_policy_document.apply_roles.json, what = "the stack's roles, within the boundary, and passing them" }
    scale_out = { document = data.aws_iam_policy_document.apply_scale_out.json, what = "the optional GPU and Batch capacity" }
  }
}

resource "aws_iam_policy" "apply" {
  for_each = local.apply_policies

  name        = "${local.name}-github-apply-${replace(each.key, "_", "-")}"
  description = "pushtrain CI apply role: ${each.value.what}"
  policy      = each.value.document
}

resource "aws_iam_role_policy_attachment" "apply" {
  for_each = local.apply_policies

  role       = aws_iam_role.github["apply"].name
  policy_arn = aws_iam_policy.apply[each.key].arn
}

# --- image: push to the trainer repository ----------------------------------------------------

data "aws_iam_policy_document" "image" {
  # iam-lint:skip=CREDENTIALS_EXPOSURE: docker login to ECR is ecr:GetAuthorizationToken; the push itself is scoped to the one repository.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "PushTrainerImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:CompleteLayerUpload",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:InitiateLayerUpload",
      "ecr:PutImage",
      "ecr:UploadLayerPart",
    ]
    resources = [local.arn.repository]
  }
}

# --- retrain: invoke the trigger, follow the run in S3 ------------------------------------------

data "aws_iam_policy_document" "retrain" {
  statement {
    sid       = "InvokeTrigger"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.arn.function]
  }

  statement {
    # S3 answers a read of a missing key with 404 only to a caller allowed s3:ListBucket, else 403:
    # without it the workflow could never tell "the run record is not written yet" from "forbidden".
    sid       = "TellMissingRecordsFromForbidden"
    actions   = ["s3:ListBucket"]
    resources = [local.arn.artifacts]
  }

  statement {
    # The workflow waits for the run record and posts the metrics of the published version.
    sid     = "ReadRunsAndModels"
    actions = ["s3:GetObject"]
    resources = [
      "${local.arn.artifacts}/runs/*",
      "${local.arn.artifacts}/models/*",
    ]
  }
}

# --- report: read-only, follow a pushed image's run ------------------------------------------------

data "aws_iam_policy_document" "report" {
  statement {
    # The run id of a push is derived from the image digest; the workflow finds it by the git sha tag.
    sid       = "FindPushedImage"
    actions   = ["ecr:DescribeImages"]
    resources = [local.arn.repository]
  }

  statement {
    # Poll the run record, then read its report (runs/<run_id>/report.md, else the version's).
    sid     = "ReadRunsAndModels"
    actions = ["s3:GetObject"]
    resources = [
      "${local.arn.artifacts}/runs/*",
      "${local.arn.artifacts}/models/*",
    ]
  }
}

# --- the stack roles' permissions boundary ----------------------------------------------------
# The most any role of the stack may ever do: the union of what the execution, task and trigger
# roles need (../iam.tf). The stack attaches it to its roles; the apply role may create or change a
# role only with it attached, and cannot edit this policy (it lives outside the stack's names).

resource "aws_iam_policy" "stack_boundary" {
  name        = local.stack_boundary_name
  path        = local.stack_iam_path
  description = "Permissions boundary of every IAM role the pushtrain stack creates"
  policy      = data.aws_iam_policy_document.stack_boundary.json
}

data "aws_iam_policy_document" "stack_boundary" {
  # iam-lint:skip=CREDENTIALS_EXPOSURE: the execution role starts image pulls with ecr:GetAuthorizationToken.
  # iam-lint:skip=PERMISSIONS_MANAGEMENT_ACTIONS: iam:PassRole of the stack's own roles, only to ECS tasks: the trigger starts tasks with them.
  # iam-lint:skip=RESOURCE_STAR(ecs:ListTasks): ECS's own policy examples scope ListTasks with the ecs:cluster condition on "*" (the reference names container-instance, which a Fargate-only cluster has none of).
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "TrainerImage"
    actions = [
      "ecr:BatchCheckLayerAvailability",
      "ecr:BatchGetImage",
      "ecr:DescribeImages",
      "ecr:GetDownloadUrlForLayer",
      "ecr:PutImage", # the trigger tags a published run's image keep-<run_id>
    ]
    resources = [local.arn.repository]
  }

  statement {
    sid       = "StackLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = [local.stack_resources_by_service.logs_trainer_streams, local.stack_resources_by_service.logs_trigger_streams]
  }

  statement {
    sid       = "Artifacts"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${local.arn.artifacts}/*"]
  }

  statement {
    sid       = "ListArtifacts"
    actions   = ["s3:ListBucket"]
    resources = [local.arn.artifacts]
  }

  statement {
    # DescribeTaskDefinition has no resource type (IAM service authorization reference).
    sid       = "DescribeTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }

  statement {
    # RegisterTaskDefinition has one, task-definition: only the trainer family and its GPU family
    # (../gpu.tf, off by default: the trigger registers a revision per CUDA image digest).
    sid       = "RegisterTrainerTaskDefinitions"
    actions   = ["ecs:RegisterTaskDefinition"]
    resources = [local.stack_resources_by_service.ecs_task_definitions, local.scale_out_arn.gpu_task_definitions]
  }

  statement {
    sid       = "RunTrainerTasks"
    actions   = ["ecs:RunTask", "ecs:TagResource"]
    resources = [local.stack_resources_by_service.ecs_task_definitions, local.scale_out_arn.gpu_task_definitions, local.arn.cluster_tasks]
  }

  statement {
    # The trigger looks for a run's tasks (ListTasks has no resource type) and checks stopped ones.
    sid       = "FindTrainerTasks"
    actions   = ["ecs:ListTasks"]
    resources = ["*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [local.stack_resources_by_service.ecs_cluster]
    }
  }

  statement {
    sid       = "DescribeTrainerTasks"
    actions   = ["ecs:DescribeTasks"]
    resources = ["${replace(local.stack_resources_by_service.ecs_cluster, ":cluster/", ":task/")}/*"]
  }

  statement {
    sid       = "PassStackRolesToEcs"
    actions   = ["iam:PassRole"]
    resources = local.arn.task_role_list

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      # batch.amazonaws.com: the trigger registers multi-node job definitions naming the task roles.
      values = ["ecs-tasks.amazonaws.com", "batch.amazonaws.com"]
    }
  }

  statement {
    sid       = "DeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [local.stack_resources_by_service.sqs_queues]
  }

  statement {
    # The trainer's message for each succeeded run, to the stack's KMS-encrypted notifications topic.
    sid       = "NotifySucceededRuns"
    actions   = ["sns:Publish"]
    resources = [local.stack_resources_by_service.sns_topics]
  }

  statement {
    sid       = "EncryptNotifications"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [local.stack_resources_by_service.kms_keys]
  }

  statement {
    # GPU and AWS Batch container instances (terraform/ec2_capacity.tf, off by default): the ECS agent
    # registers, polls and reports only on the stack's cluster and the cluster AWS Batch makes for the
    # stack's compute environment ("<environment>_Batch_<id>"), and their container instances. A role
    # the apply role writes cannot join or drive any other cluster's instances.
    sid = "EcsAgent"
    actions = [
      "ecs:DeregisterContainerInstance",
      "ecs:Poll",
      "ecs:PutSystemLogEvents",
      "ecs:RegisterContainerInstance",
      "ecs:StartTelemetrySession",
      "ecs:SubmitAttachmentStateChanges",
      "ecs:SubmitContainerStateChange",
      "ecs:SubmitTaskStateChange",
    ]
    resources = concat(local.stack_agent_clusters, [for cluster in local.stack_agent_clusters : "${replace(cluster, ":cluster/", ":container-instance/")}/*"])
  }

  statement {
    # GPU Spot notices (../gpu.tf trigger_spot_notice, only with var.gpu.spot): the trigger finds the
    # noticed instance among the stack cluster's container instances and stops our tasks on it.
    sid     = "StopTasksOnSpotNotices"
    actions = ["ecs:DescribeContainerInstances", "ecs:ListContainerInstances", "ecs:StopTask"]
    resources = [
      local.stack_resources_by_service.ecs_cluster,
      "${replace(local.stack_resources_by_service.ecs_cluster, ":cluster/", ":container-instance/")}/*",
      local.arn.cluster_tasks,
    ]
  }

  statement {
    # None of these has a resource type.
    sid       = "EcsAgentEndpointAndBatchLookups"
    actions   = ["batch:DescribeJobDefinitions", "batch:DescribeJobs", "batch:ListJobs", "ecs:DiscoverPollEndpoint"]
    resources = ["*"]
  }

  statement {
    # Multi-node runs (terraform/batch.tf, off by default): the trigger pins revisions of the stack's job
    # definition family ...
    sid       = "MultiNodeJobDefinitions"
    actions   = ["batch:RegisterJobDefinition", "batch:TagResource"]
    resources = ["${local.scale_out_arn.job_definition}*"]
  }

  statement {
    # ... and submits them to the stack's queue only (SubmitJob is authorized on the queue and on the job
    # definition; the job it creates is tagged).
    sid       = "MultiNodeJobs"
    actions   = ["batch:SubmitJob", "batch:TagResource"]
    resources = [local.scale_out_arn.job_queue, local.scale_out_arn.job_definitions, local.scale_out_arn.jobs]
  }
}
