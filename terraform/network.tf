# Two subnets in two availability zones; the training tasks' only traffic is HTTPS to AWS
# APIs (ECR, S3, CloudWatch Logs). Nothing ever connects *to* a task. Idle cost of each mode:
# terraform/README.md, "Cost" (one derivation, us-east-1 prices).
#
# network_mode = "public" (default): an internet gateway (free) and a public IP per task (RunTask
#   assignPublicIp = ENABLED, $0.005 per IP-hour while the task runs); no inbound rule, so still
#   unreachable from outside. $0 idle.
# network_mode = "private": no internet route at all. ECR and CloudWatch Logs are reached through
#   interface endpoints ($0.01 per endpoint per AZ-hour: 3 endpoints x var.private_endpoint_zones x
#   730 h = $21.90/month idle in one zone, $43.80 in two), S3 (and with it the image layers) through a
#   free gateway endpoint. One NAT gateway would cost more idle ($0.045/h = $32.85/month, plus
#   $0.045/GB) and open the whole internet.

# Pinned by name, so the subnets never move when AWS adds a zone; the lookup fails the plan when a
# named zone does not exist or is not available.
data "aws_availability_zones" "this" {
  state = "available"

  filter {
    name   = "zone-name"
    values = [for suffix in var.availability_zone_suffixes : "${var.region}${suffix}"]
  }
}

locals {
  availability_zones = data.aws_availability_zones.this.names
  # ECR needs both its API and its Docker registry endpoint; awslogs needs logs.
  # GPU and Batch container instances add the ECS agent's three (ec2_capacity.tf).
  interface_endpoints = local.private_network ? toset(concat(["ecr.api", "ecr.dkr", "logs"], local.ecs_agent_endpoints)) : toset([])
  # "com.amazonaws" in the aws partition, not in every partition (aws-cn: "cn.com.amazonaws").
  service_name_prefix = "${data.aws_partition.this.reverse_dns_prefix}.${var.region}"
  # The interface endpoints' zones: the first var.private_endpoint_zones of the subnets' zones. A task
  # in the other zone reaches them across zones (private DNS answers with the endpoints' addresses).
  endpoint_zones = slice(sort(local.availability_zones), 0, var.private_endpoint_zones)
}

# --- VPC and subnets --------------------------------------------------------------------------

resource "aws_vpc" "this" {
  # checkov:skip=CKV2_AWS_11: VPC flow logs would cost more than the rest of the idle stack; the tasks accept no inbound traffic and talk only to AWS APIs.
  # checkov:skip=CKV2_AWS_12: nothing is ever placed in the default security group (tasks and endpoints name their own), and managing it would need the CI apply role to tag and edit a security group it did not create, which no tag condition can scope.
  cidr_block = var.vpc_cidr
  # Interface endpoints answer on the services' public names only with private DNS on.
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = { Name = local.name }
}

resource "aws_subnet" "this" {
  for_each = { for index, zone in local.availability_zones : zone => index }

  vpc_id            = aws_vpc.this.id
  availability_zone = each.key
  cidr_block        = cidrsubnet(var.vpc_cidr, 4, each.value)
  # A public IP is requested per task by RunTask (PUSHTRAIN_ASSIGN_PUBLIC_IP), never by default.
  map_public_ip_on_launch = false

  tags = { Name = "${local.name}-${var.network_mode}-${each.key}" }
}

resource "aws_route_table" "this" {
  vpc_id = aws_vpc.this.id

  tags = { Name = "${local.name}-${var.network_mode}" }
}

resource "aws_route_table_association" "this" {
  for_each = aws_subnet.this

  subnet_id      = each.value.id
  route_table_id = aws_route_table.this.id
}

# --- public mode: internet gateway ------------------------------------------------------------

resource "aws_internet_gateway" "this" {
  count = local.private_network ? 0 : 1

  vpc_id = aws_vpc.this.id

  tags = { Name = local.name }
}

resource "aws_route" "internet" {
  count = local.private_network ? 0 : 1

  route_table_id         = aws_route_table.this.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

# --- private mode: VPC endpoints --------------------------------------------------------------

resource "aws_vpc_endpoint" "s3" {
  count = local.private_network ? 1 : 0

  vpc_id            = aws_vpc.this.id
  service_name      = "${local.service_name_prefix}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = [aws_route_table.this.id]
  policy            = data.aws_iam_policy_document.s3_endpoint.json

  tags = { Name = "${local.name}-s3" }
}

data "aws_iam_policy_document" "s3_endpoint" {
  # The endpoint policy is a second gate on top of IAM: it must allow every S3 call the
  # trainer makes (reads, conditional writes, listing) and the image pull.
  statement {
    sid       = "ArtifactsObjects"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${aws_s3_bucket.this.arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  statement {
    sid       = "ArtifactsListing"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }

  statement {
    # ECR stores image layers in this AWS-owned bucket; without it no image can be pulled.
    sid       = "EcrImageLayers"
    actions   = ["s3:GetObject"]
    resources = ["arn:${local.partition}:s3:::prod-${var.region}-starport-layer-bucket/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}

resource "aws_vpc_endpoint" "interface" {
  for_each = local.interface_endpoints

  vpc_id              = aws_vpc.this.id
  service_name        = "${local.service_name_prefix}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = [for zone in local.endpoint_zones : aws_subnet.this[zone].id]
  security_group_ids  = [aws_security_group.endpoints[0].id]
  private_dns_enabled = true
  # Not the default full-access policy: only this account's principals, only the calls a training
  # task makes through it (image pull for ecr.*, its log stream for logs).
  policy = data.aws_iam_policy_document.interface_endpoint[each.key].json

  tags = { Name = "${local.name}-${each.key}" }
}

data "aws_iam_policy_document" "interface_endpoint" {
  # iam-lint:skip=CREDENTIALS_EXPOSURE: ecr:GetAuthorizationToken is how an image pull starts; the endpoint passes it only for this account's principals, whose IAM decides.
  for_each = local.interface_endpoints

  dynamic "statement" {
    for_each = local.interface_endpoint_calls[each.key]

    content {
      sid       = statement.key
      actions   = statement.value.actions
      resources = statement.value.resources

      principals {
        type        = "AWS"
        identifiers = ["*"]
      }

      condition {
        test     = "StringEquals"
        variable = "aws:PrincipalAccount"
        values   = [local.account_id]
      }
    }
  }
}

locals {
  # What the execution role does through each interface endpoint (iam.tf, "execution").
  ecr_pull_calls = {
    EcrLogin = { actions = ["ecr:GetAuthorizationToken"], resources = ["*"] } # no resource type
    PullTrainerImage = {
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = [aws_ecr_repository.this.arn]
    }
  }
  interface_endpoint_calls = {
    "ecr.api" = local.ecr_pull_calls
    "ecr.dkr" = local.ecr_pull_calls
    logs = {
      TrainerLogs = { actions = ["logs:CreateLogStream", "logs:PutLogEvents"], resources = ["${aws_cloudwatch_log_group.trainer.arn}:*"] }
    }
    # With GPU or Batch capacity (ec2_capacity.tf): what the container instances' ECS agent does through
    # each of its three endpoints (the "container_instance" policy there).
    ecs = {
      EcsAgentOnOurClusters = {
        actions = [
          "ecs:DeregisterContainerInstance",
          "ecs:RegisterContainerInstance",
          "ecs:SubmitAttachmentStateChanges",
          "ecs:SubmitContainerStateChange",
          "ecs:SubmitTaskStateChange",
        ]
        resources = [
          aws_ecs_cluster.this.arn,
          "arn:${local.partition}:ecs:${var.region}:${local.account_id}:cluster/${local.batch_environment}_Batch_*",
        ]
      }
      EcsAgentEndpoint = { actions = ["ecs:DiscoverPollEndpoint"], resources = ["*"] } # no resource type
    }
    ecs-agent = {
      EcsAgentPoll = { actions = ["ecs:Poll"], resources = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/*"] }
    }
    ecs-telemetry = {
      EcsAgentTelemetry = {
        actions   = ["ecs:StartTelemetrySession"]
        resources = ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/*"]
      }
      EcsAgentSystemLogs = {
        actions = ["ecs:PutSystemLogEvents"]
        resources = [
          aws_ecs_cluster.this.arn,
          "arn:${local.partition}:ecs:${var.region}:${local.account_id}:cluster/${local.batch_environment}_Batch_*",
          "arn:${local.partition}:ecs:${var.region}:${local.account_id}:container-instance/*/*",
        ]
      }
    }
  }
}
resource "aws_security_group" "endpoints" {
  count = local.private_network ? 1 : 0

  name        = "${local.name}-endpoints"
  description = "Interface endpoints: HTTPS from the training tasks only"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${local.name}-endpoints" }
}

resource "aws_vpc_security_group_ingress_rule" "endpoints_https" {
  count = local.private_network ? 1 : 0

  security_group_id            = aws_security_group.endpoints[0].id
  description                  = "HTTPS from the training tasks"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.tasks.id
}

# --- training tasks' security group ---------------------------------------------------------

resource "aws_security_group" "tasks" {
  name        = "${local.name}-tasks"
  description = "Training tasks: no inbound, HTTPS out to AWS APIs"
  vpc_id      = aws_vpc.this.id

  tags = { Name = "${local.name}-tasks" }
}

resource "aws_vpc_security_group_egress_rule" "tasks_https_internet" {
  count = local.private_network ? 0 : 1

  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to AWS API endpoints over the internet gateway"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "tasks_https_endpoints" {
  count = local.private_network ? 1 : 0

  security_group_id            = aws_security_group.tasks.id
  description                  = "HTTPS to the interface endpoints"
  ip_protocol                  = "tcp"
  from_port                    = 443
  to_port                      = 443
  referenced_security_group_id = aws_security_group.endpoints[0].id
}

resource "aws_vpc_security_group_egress_rule" "tasks_https_s3" {
  count = local.private_network ? 1 : 0

  security_group_id = aws_security_group.tasks.id
  description       = "HTTPS to S3 through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = aws_vpc_endpoint.s3[0].prefix_list_id
}
