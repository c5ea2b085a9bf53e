terraform {
  # 1.10 brings S3-native state locking (`use_lockfile`), so no DynamoDB lock table is needed.
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # Partial configuration: the bucket and region come from `-backend-config`
  # (see README.md; `terraform -chdir=bootstrap output -raw stack_backend_config`).
  backend "s3" {
    key          = "pushtrain/stack.tfstate"
    encrypt      = true
    use_lockfile = true
  }
}
