"""pushtrain's checkov policies on plans (checkov imports this folder as a package: --external-checks-dir)."""
