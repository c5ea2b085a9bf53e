#!/usr/bin/env bash
# init, fmt -check and validate a Terraform root module, then plan or apply it.
#
# plan: `terraform plan -detailed-exitcode` (through `tfcmt plan -patch` when commenting) and its
# exit code handled explicitly: 0 no changes, 2 changes (both succeed), anything else fails.
# Outputs (GITHUB_OUTPUT): exit-code, has-changes, plan-file. A line per run in GITHUB_STEP_SUMMARY.
#
# env: TF_COMMAND (plan|apply), TF_WORKING_DIR, TF_EXTRA_ARGS and TF_BACKEND_CONFIG (one item a
#      line), TF_COMMENT (true|false), TF_PLAN_FILE (absolute path for the plan), GITHUB_TOKEN (tfcmt).
set -euo pipefail

command="${TF_COMMAND:-}"
workdir="${TF_WORKING_DIR:-terraform}"
comment="${TF_COMMENT:-true}"
plan_file="${TF_PLAN_FILE:-$PWD/tfplan}"
output="${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
summary="${GITHUB_STEP_SUMMARY:?GITHUB_STEP_SUMMARY is not set}"

case "$command" in
  plan | apply) ;;
  *)
    echo "::error title=terraform::command must be plan or apply, got '$command'"
    exit 1
    ;;
esac
case "$comment" in
  true | false) ;;
  *)
    echo "::error title=terraform::comment must be true or false, got '$comment'"
    exit 1
    ;;
esac
if [[ ! -d "$workdir" ]]; then
  echo "::error title=terraform::working-directory '$workdir' does not exist"
  exit 1
fi

# One argument per non-blank line; `read` trims the surrounding whitespace. No word splitting, no eval.
extra_args=()
while read -r line; do
  if [[ -n "$line" ]]; then extra_args+=("$line"); fi
done <<<"${TF_EXTRA_ARGS:-}"
init_args=()
while read -r line; do
  if [[ -n "$line" ]]; then init_args+=("-backend-config=$line"); fi
done <<<"${TF_BACKEND_CONFIG:-}"

cd "$workdir"

# Plans (pull requests, drift) and applies take the same S3 state lock from different concurrency
# groups: wait for the other one instead of failing at once on "Error acquiring the state lock".
lock_timeout="10m"

echo "::group::terraform init ($workdir)"
terraform init -input=false -no-color "${init_args[@]}"
echo "::endgroup::"

if ! terraform fmt -check -diff -recursive -no-color; then
  echo "::error title=terraform fmt::files in $workdir are not formatted: run 'make fmt' and commit the result"
  exit 1
fi

echo "::group::terraform validate ($workdir)"
terraform validate -no-color
echo "::endgroup::"

# Wrap a terraform command in tfcmt (which comments and returns terraform's exit code) or not.
run_terraform() {
  local sub="$1"
  shift
  if [[ "$comment" == "true" ]]; then
    local tfcmt_args=(-var "target:$workdir" "$sub")
    if [[ "$sub" == "plan" ]]; then tfcmt_args+=(-patch); fi
    tfcmt "${tfcmt_args[@]}" -- terraform "$sub" "$@"
  else
    terraform "$sub" "$@"
  fi
}

if [[ "$command" == "plan" ]]; then
  echo "::group::terraform plan ($workdir)"
  set +e
  run_terraform plan -input=false -no-color -lock-timeout="$lock_timeout" -detailed-exitcode -out="$plan_file" "${extra_args[@]}"
  code=$?
  set -e
  echo "::endgroup::"
  echo "exit-code=$code" >>"$output"
  case "$code" in
    0)
      echo "has-changes=false" >>"$output"
      echo "plan-file=$plan_file" >>"$output"
      echo "### terraform plan \`$workdir\`: no changes" >>"$summary"
      ;;
    2)
      terraform show -no-color "$plan_file" >"$plan_file.txt"
      echo "has-changes=true" >>"$output"
      echo "plan-file=$plan_file" >>"$output"
      echo "### terraform plan \`$workdir\`: changes to apply" >>"$summary"
      ;;
    *)
      echo "### terraform plan \`$workdir\`: failed (exit $code)" >>"$summary"
      echo "::error title=terraform plan::plan failed in $workdir with exit code $code"
      exit 1
      ;;
  esac
else
  echo "::group::terraform apply ($workdir)"
  set +e
  run_terraform apply -input=false -no-color -lock-timeout="$lock_timeout" -auto-approve "${extra_args[@]}"
  code=$?
  set -e
  echo "::endgroup::"
  echo "exit-code=$code" >>"$output"
  if [[ "$code" -ne 0 ]]; then
    echo "### terraform apply \`$workdir\`: failed (exit $code)" >>"$summary"
    echo "::error title=terraform apply::apply failed in $workdir with exit code $code"
    exit 1
  fi
  echo "### terraform apply \`$workdir\`: applied" >>"$summary"
fi
