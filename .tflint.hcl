# tflint for both Terraform roots (ci.yml runs `tflint --recursive`). Plugin versions are pinned so
# a new rule release cannot fail CI without a reviewed change here.
config {
  call_module_type = "local"
}

plugin "terraform" {
  enabled = true
  preset  = "recommended"
}

plugin "aws" {
  enabled = true
  version = "0.48.0"
  source  = "github.com/terraform-linters/tflint-ruleset-aws"
}
