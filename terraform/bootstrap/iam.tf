# The four CI roles (../../docs/contracts.md, "GitHub OIDC roles"). Each trusts GitHub's OIDC
# provider for exactly its `sub` claims with `aud = sts.amazonaws.com`, and is allowed only what
# its workflow does:
#   plan     terraform plan (pull requests, the scheduled drift check): read the stack, read state, take the lock
#   apply    terraform apply and destroy of the stack (environment "production")
#   image    push the trainer image to its one repository (environment "ecr-push")
#   retrain  invoke the trigger, read the run's record and report (environment "retrain")

# --- trust ------------------------------------------------------------------------------------

data "aws_iam_policy_document" "github_trust" {
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

resource "aws_iam_role_policy" "github" {
  for_each = {
    plan    = data.aws_iam_policy_document.plan.json
    apply   = data.aws_iam_policy_document.apply.json
    image   = data.aws_iam_policy_document.image.json
    retrain = data.aws_iam_policy_document.retrain.json
  }

  name   = each.key
  role   = aws_iam_role.github[each.key].id
  policy = each.value
}

# --- plan: read-only --------------------------------------------------------------------------

data "aws_iam_policy_document" "plan" {
  # checkov:skip=CKV_AWS_356: Describe/List calls of EC2, ECS, CloudWatch, Logs and KMS have no resource type and can only be granted on "*"; the statement holds only read actions.
  statement {
    # Refreshing state reads every resource of the stack; these calls cannot be scoped.
    sid       = "DescribeStack"
    actions   = local.describe_actions
    resources = ["*"]
  }

  statement {
    sid       = "ReadStackResources"
    actions   = local.stack_read_actions
    resources = local.stack_resources
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
    # `terraform plan` takes the state lock too: it creates and deletes "<key>.tflock".
    sid       = "StateLock"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = [local.arn.stack_lockfile]
  }
}

# --- apply: manage the stack ------------------------------------------------------------------

data "aws_iam_policy_document" "apply" {
  # checkov:skip=CKV_AWS_356: creating VPC resources, a KMS key and task definitions has no resource type to scope to; those statements list their actions one by one and hold the region, everything else is scoped to the stack's names.
  # checkov:skip=CKV_AWS_111: route53:AssociateVPCWithHostedZone targets the AWS-owned private hosted zone of an interface endpoint, whose ARN the account cannot know, and Route 53 calls carry no region to condition on; the statement holds that one action.
  statement {
    sid = "Network"
    actions = [
      "ec2:AssociateRouteTable",
      "ec2:AttachInternetGateway",
      "ec2:AuthorizeSecurityGroupEgress",
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:CreateInternetGateway",
      "ec2:CreateRoute",
      "ec2:CreateRouteTable",
      "ec2:CreateSecurityGroup",
      "ec2:CreateSubnet",
      "ec2:CreateTags",
      "ec2:CreateVpc",
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
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    sid       = "DescribeStack"
    actions   = local.describe_actions
    resources = ["*"]
  }

  statement {
    sid = "UnscopableCalls"
    actions = [
      "ecs:DeregisterTaskDefinition",
      "ecs:RegisterTaskDefinition",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [var.region]
    }
  }

  statement {
    # Interface endpoints with private DNS associate an AWS-owned private hosted zone with the VPC.
    # Route 53 is a global service: its calls are not made in var.region, so no region condition.
    sid       = "EndpointPrivateDns"
    actions   = ["route53:AssociateVPCWithHostedZone"]
    resources = ["*"]
  }

  statement {
    # A refresh before every apply reads what a plan reads.
    sid       = "ReadStackResources"
    actions   = local.stack_read_actions
    resources = local.stack_resources
  }

  statement {
    # Exactly the create, update, tag and delete calls the provider makes for the stack's resource
    # types, on the resources the stack names (the bucket, roles and key have their own statements).
    sid       = "StackServices"
    actions   = local.stack_write_actions
    resources = [for key, arn in local.stack_resources_by_service : arn if !contains(["s3_artifacts", "iam_stack_roles", "kms_keys"], key)]
  }

  statement {
    # Bucket configuration only: the apply role never reads or writes the artifacts themselves.
    sid = "ArtifactsBucketConfiguration"
    actions = [
      "s3:CreateBucket",
      "s3:DeleteBucket",
      "s3:DeleteBucketPolicy",
      "s3:PutBucketOwnershipControls",
      "s3:PutBucketPolicy",
      "s3:PutBucketPublicAccessBlock",
      "s3:PutBucketTagging",
      "s3:PutBucketVersioning",
      "s3:PutEncryptionConfiguration",
      "s3:PutLifecycleConfiguration",
    ]
    resources = [local.arn.artifacts]
  }

  statement {
    # Every write that could widen a stack role requires the role to carry the stack boundary: a
    # role the apply role creates or edits can never do more than stack_boundary allows, whatever
    # its inline policy says (so the apply role cannot make itself an administrator through one).
    sid = "StackRolesWithinBoundary"
    actions = [
      "iam:CreateRole",
      "iam:DeleteRolePolicy",
      "iam:PutRolePermissionsBoundary",
      "iam:PutRolePolicy",
    ]
    resources = [local.arn.stack_roles]

    condition {
      test     = "StringEquals"
      variable = "iam:PermissionsBoundary"
      values   = [aws_iam_policy.stack_boundary.arn]
    }
  }

  statement {
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
      "iam:UpdateAssumeRolePolicy",
      "iam:UpdateRole",
      "iam:UpdateRoleDescription",
    ]
    resources = [local.arn.stack_roles]
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
    sid       = "PassStackRoles"
    actions   = ["iam:PassRole"]
    resources = [local.arn.stack_roles]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com", "lambda.amazonaws.com"]
    }
  }

  statement {
    # The key is created with the stack's tags (provider default_tags), and only then managed.
    sid       = "CreateStackKey"
    actions   = ["kms:CreateKey", "kms:TagResource"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/Project"
      values   = [local.name]
    }
  }

  statement {
    sid = "StackKey"
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
    resources = [local.stack_resources_by_service.kms_keys]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = [local.name]
    }
  }

  statement {
    # An alias carries no tags; it is scoped by its name.
    sid       = "StackKeyAlias"
    actions   = ["kms:CreateAlias", "kms:DeleteAlias", "kms:UpdateAlias"]
    resources = ["arn:${local.partition}:kms:${local.region_account}:alias/${local.name}-*"]
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

# --- image: push to the trainer repository ----------------------------------------------------

data "aws_iam_policy_document" "image" {
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
    # The workflow waits for the run record and posts the metrics of the published version.
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
    # RegisterTaskDefinition and DescribeTaskDefinition have no resource type.
    sid       = "TaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition", "ecs:RegisterTaskDefinition"]
    resources = ["*"]
  }

  statement {
    sid       = "RunTrainerTasks"
    actions   = ["ecs:RunTask", "ecs:TagResource"]
    resources = [local.stack_resources_by_service.ecs_task_definitions, local.arn.cluster_tasks]
  }

  statement {
    sid       = "PassStackRolesToEcs"
    actions   = ["iam:PassRole"]
    resources = [local.arn.stack_roles]

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
    # GPU and AWS Batch container instances (terraform/ec2_capacity.tf, off by default): the ECS agent,
    # on this account's clusters and container instances (the stack's role policy narrows them further).
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
    resources = [
      "arn:${local.partition}:ecs:*:${local.account_id}:cluster/*",
      "arn:${local.partition}:ecs:*:${local.account_id}:container-instance/*",
    ]
  }

  statement {
    # None of these has a resource type.
    sid       = "EcsAgentEndpointAndBatchLookups"
    actions   = ["batch:DescribeJobDefinitions", "batch:ListJobs", "ecs:DiscoverPollEndpoint"]
    resources = ["*"]
  }

  statement {
    # Multi-node runs (terraform/batch.tf, off by default): the trigger pins and submits jobs; its role
    # policy narrows them to the stack's queue and job definition family.
    sid     = "MultiNodeJobs"
    actions = ["batch:RegisterJobDefinition", "batch:SubmitJob", "batch:TagResource"]
    resources = [
      "arn:${local.partition}:batch:*:${local.account_id}:job-definition/*",
      "arn:${local.partition}:batch:*:${local.account_id}:job-queue/*",
      "arn:${local.partition}:batch:*:${local.account_id}:job/*",
    ]
  }
}
