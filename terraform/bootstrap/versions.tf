terraform {
  # 1.10 brings S3-native state locking (`use_lockfile`), which the stack's backend uses.
  required_version = ">= 1.10.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }

  # No backend block: the first apply keeps its state locally, because the bucket it would live in
  # does not exist yet. README.md shows how to move it into that bucket afterwards
  # (`terraform output -raw bootstrap_backend_config > backend.tf` and `terraform init -migrate-state`).
}
