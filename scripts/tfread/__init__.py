"""The Terraform reader: what `terraform/` and `terraform/bootstrap/` declare, evaluated without Terraform.

`hcl` evaluates HCL expressions (variables, locals, the functions the roots use); `terraform` loads a root
module (its variables, locals, resources and data sources, their count/for_each instances) and reads the
names and settings the local pipeline provisions from; `policies` renders every `aws_iam_policy_document`
to the JSON `terraform apply` would send and finds what IAM holds for each role.

Both the linter (`scripts/lint.py`, `scripts/aws_limits.py`) and the local pipeline (`pushtrain_local`)
import it; it imports neither.
"""
