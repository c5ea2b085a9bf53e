variable "github_repository" {
  description = "GitHub repository (owner/name) whose workflows may assume the CI roles."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}$", var.github_repository))
    error_message = "The github_repository must be \"owner/name\", for example octo-org/pushtrain."
  }
}

variable "name" {
  description = "Name prefix of the stack (must equal the stack's var.name): the CI roles are scoped to the resources the stack names from it."
  type        = string
  default     = "pushtrain"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "The name must be 3-24 characters of lowercase letters, digits and dashes, starting with a letter and not ending with a dash."
  }
}

variable "region" {
  description = "AWS region of the state bucket and of the stack the CI roles manage."
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

variable "state_bucket_name" {
  description = "Name of the Terraform state bucket; null derives \"<name>-tfstate-<account id>-<region>\"."
  type        = string
  default     = null

  validation {
    condition     = var.state_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.state_bucket_name))
    error_message = "The state_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots and dashes)."
  }
}

variable "artifacts_bucket_name" {
  description = "Name of the stack's artifacts bucket when the stack overrides it (its var.artifacts_bucket_name); null means the stack's default name."
  type        = string
  default     = null

  validation {
    condition     = var.artifacts_bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.artifacts_bucket_name))
    error_message = "The artifacts_bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots and dashes)."
  }
}

variable "create_oidc_provider" {
  description = "Whether to create the account's GitHub OIDC provider; false uses the one that already exists (an account holds at most one per URL)."
  type        = bool
  default     = true
}

variable "state_noncurrent_version_days" {
  description = "Days a replaced Terraform state version is kept (the history to roll back to)."
  type        = number
  default     = 90

  validation {
    condition     = var.state_noncurrent_version_days >= 1 && floor(var.state_noncurrent_version_days) == var.state_noncurrent_version_days
    error_message = "The state_noncurrent_version_days must be a whole number of at least 1."
  }
}
