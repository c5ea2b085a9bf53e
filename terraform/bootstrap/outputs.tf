output "state_bucket" {
  description = "Name of the Terraform state bucket (repository variable TF_STATE_BUCKET)."
  value       = aws_s3_bucket.state.id
}

output "role_arns" {
  description = "ARNs of the five CI roles, by use: plan, apply, image, retrain, report."
  value       = { for use, role in aws_iam_role.github : use => role.arn }
}

output "role_subjects" {
  description = "The OIDC `sub` claims each CI role trusts, by use."
  value       = local.role_subjects
}

output "stack_boundary_arn" {
  description = "ARN of the permissions boundary every stack role carries (the stack derives the same ARN from its name)."
  value       = aws_iam_policy.stack_boundary.arn
}

output "github_oidc_provider_arn" {
  description = "ARN of the GitHub Actions OIDC provider the roles trust."
  value       = local.github_oidc_provider_arn
}

output "github_variables" {
  description = "Every repository variable the workflows read, with its value (set each with `gh variable set NAME --body VALUE`)."
  value = {
    AWS_REGION            = var.region
    AWS_PLAN_ROLE_ARN     = aws_iam_role.github["plan"].arn
    AWS_APPLY_ROLE_ARN    = aws_iam_role.github["apply"].arn
    AWS_IMAGE_ROLE_ARN    = aws_iam_role.github["image"].arn
    AWS_RETRAIN_ROLE_ARN  = aws_iam_role.github["retrain"].arn
    AWS_REPORT_ROLE_ARN   = aws_iam_role.github["report"].arn
    TF_STATE_BUCKET       = aws_s3_bucket.state.id
    ECR_REPOSITORY        = local.repository_name
    TRIGGER_FUNCTION_NAME = local.function_name
    ARTIFACTS_BUCKET      = local.artifacts_bucket_name
  }
}

output "stack_backend_config" {
  description = "Backend settings for the stack root, as a file for `terraform -chdir=terraform init -backend-config=<file>`."
  value       = <<-EOT
    bucket = "${aws_s3_bucket.state.id}"
    region = "${var.region}"
  EOT
}

output "bootstrap_backend_config" {
  description = "A backend.tf for this root that moves its local state into the state bucket (`terraform init -migrate-state`)."
  value       = <<-EOT
    terraform {
      backend "s3" {
        bucket       = "${aws_s3_bucket.state.id}"
        key          = "${local.bootstrap_state_key}"
        region       = "${var.region}"
        encrypt      = true
        use_lockfile = true
      }
    }
  EOT
}
