#!/usr/bin/env bash
# init, fmt -check and validate a Terraform root module, then plan it or apply a saved plan.
#
# plan: `terraform plan -detailed-exitcode -out=<plan file>` (through `tfcmt plan` when commenting),
#   exit code handled explicitly: 0 no changes, 2 changes (both succeed), anything else fails. A plan
#   that succeeds leaves <plan file>.txt (its text), <plan file>.json (`terraform show -json`: the
#   workflows derive the change set they compare and the policy checks from it; never uploaded),
#   <plan file>.lock.hcl (the dependency lock file init used: the providers the plan was made with)
#   and <plan file>.sha256; outputs exit-code, has-changes, plan-file, plan-sha256.
# apply: applies exactly the saved plan TF_PLAN_FILE, after checking its sha256 is TF_PLAN_SHA256 (what
#   the plan job recorded), with exactly the providers of <plan file>.lock.hcl (`init -lockfile=readonly`).
#   It never plans: a missing, changed or stale plan, or providers other than the planned ones, fail
#   with a message and nothing is applied. Outputs exit-code.
# A line per run in GITHUB_STEP_SUMMARY.
#
# env: TF_COMMAND (plan|apply), TF_WORKING_DIR, TF_EXTRA_ARGS and TF_BACKEND_CONFIG (one item a line),
#      TF_COMMENT (true|false), TF_PATCH (true|false: tfcmt updates its previous plan comment),
#      TF_PLAN_FILE (absolute path of the plan), TF_PLAN_SHA256 (apply), GITHUB_TOKEN (tfcmt).
set -euo pipefail

command="${TF_COMMAND:-}"
workdir="${TF_WORKING_DIR:-terraform}"
comment="${TF_COMMENT:-true}"
patch="${TF_PATCH:-true}"
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
for flag in "comment=$comment" "patch=$patch"; do
  case "${flag#*=}" in
    true | false) ;;
    *)
      echo "::error title=terraform::${flag%%=*} must be true or false, got '${flag#*=}'"
      exit 1
      ;;
  esac
done
if [[ ! -d "$workdir" ]]; then
  echo "::error title=terraform::working-directory '$workdir' does not exist"
  exit 1
fi
if [[ "$plan_file" != /* ]]; then plan_file="$PWD/$plan_file"; fi

# Apply only the plan that was reviewed: check it before anything else runs.
if [[ "$command" == "apply" ]]; then
  expected="${TF_PLAN_SHA256:-}"
  if [[ ! -f "$plan_file" ]]; then
    echo "### terraform apply \`$workdir\`: no plan file, nothing applied" >>"$summary"
    echo "::error title=terraform apply::no saved plan at $plan_file: the plan job's artifact is missing or expired (it is kept 1 day, so an approval after that finds nothing): nothing applied; start the workflow again on main to plan afresh and approve within the day"
    exit 1
  fi
  if [[ ! "$expected" =~ ^[0-9a-f]{64}$ ]]; then
    echo "::error title=terraform apply::plan-sha256 must be the 64-hex sha256 the plan job recorded, got '$expected': nothing applied"
    exit 1
  fi
  actual="$(sha256sum "$plan_file" | cut -d ' ' -f 1)"
  if [[ "$actual" != "$expected" ]]; then
    echo "### terraform apply \`$workdir\`: the plan file changed after it was planned, nothing applied" >>"$summary"
    echo "::error title=terraform apply::the plan file's sha256 is $actual, but the plan job recorded $expected: it is not the plan that was reviewed; nothing applied"
    exit 1
  fi
  if [[ ! -f "$plan_file.lock.hcl" ]]; then
    echo "::error title=terraform apply::the plan artifact holds no lock file ($(basename "$plan_file").lock.hcl), so the providers the plan was made with are unknown: nothing applied; start the workflow again to plan afresh"
    exit 1
  fi
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

if [[ "$command" == "apply" ]]; then
  # The providers the plan was made with, not whatever is newest now (the plan file records their
  # versions; a newer one makes `terraform apply` refuse with "Inconsistent dependency lock file").
  cp "$plan_file.lock.hcl" "$workdir/.terraform.lock.hcl"
  init_args+=(-lockfile=readonly)
fi

cd "$workdir"
lock_committed=false
if [[ -f .terraform.lock.hcl ]]; then lock_committed=true; fi

# Plans (pull requests, main, drift, destroy) and applies take the same S3 state lock from different
# concurrency groups: wait for the other one instead of failing at once on "Error acquiring the state lock".
lock_timeout="10m"

echo "::group::terraform init ($workdir)"
if ! terraform init -input=false -no-color "${init_args[@]}"; then
  echo "::endgroup::"
  if [[ "$command" == "apply" ]]; then
    echo "### terraform apply \`$workdir\`: could not install the planned providers, nothing applied" >>"$summary"
    echo "::error title=terraform init::could not install exactly the providers the plan was made with (its .terraform.lock.hcl, -lockfile=readonly): nothing applied; read the init log above, then start the workflow again to plan afresh"
  else
    echo "::error title=terraform init::init failed in $workdir"
  fi
  exit 1
fi
echo "::endgroup::"
if [[ ! -f .terraform.lock.hcl ]]; then
  echo "::error title=terraform init::init left no .terraform.lock.hcl in $workdir, so the providers cannot be recorded"
  exit 1
fi
if [[ "$lock_committed" == "false" ]]; then
  echo "::warning title=terraform init::no .terraform.lock.hcl is committed in $workdir: init chose the newest providers the version constraints allow, and only this plan's artifact records which. Commit one: run the providers-lock workflow (Actions → providers-lock), or locally 'terraform -chdir=$workdir providers lock -platform=linux_amd64 -platform=linux_arm64 -platform=darwin_arm64', and commit the file"
fi

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
    if [[ "$sub" == "plan" && "$patch" == "true" ]]; then tfcmt_args+=(-patch); fi
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
    0 | 2)
      terraform show -no-color "$plan_file" >"$plan_file.txt"
      terraform show -json "$plan_file" >"$plan_file.json"
      cp .terraform.lock.hcl "$plan_file.lock.hcl"
      sha="$(sha256sum "$plan_file" | cut -d ' ' -f 1)"
      echo "$sha  $(basename "$plan_file")" >"$plan_file.sha256"
      if [[ "$code" -eq 0 ]]; then has_changes=false; else has_changes=true; fi
      {
        echo "has-changes=$has_changes"
        echo "plan-file=$plan_file"
        echo "plan-sha256=$sha"
      } >>"$output"
      if [[ "$has_changes" == "true" ]]; then
        echo "### terraform plan \`$workdir\`: changes to apply (plan sha256 \`$sha\`)" >>"$summary"
        # What the production reviewers read before they approve (a summary holds at most 1 MiB).
        {
          echo "<details><summary>the plan</summary>"
          echo
          echo '```'
          head -c 200000 "$plan_file.txt"
          if [[ "$(wc -c <"$plan_file.txt")" -gt 200000 ]]; then echo "… (truncated: the whole plan is in the job's log)"; fi
          echo '```'
          echo "</details>"
        } >>"$summary"
      else
        echo "### terraform plan \`$workdir\`: no changes" >>"$summary"
      fi
      ;;
    *)
      echo "### terraform plan \`$workdir\`: failed (exit $code)" >>"$summary"
      echo "::error title=terraform plan::plan failed in $workdir with exit code $code"
      exit 1
      ;;
  esac
else
  echo "::group::terraform apply ($workdir, saved plan $(basename "$plan_file"))"
  log="$plan_file.apply.log"
  set +e
  run_terraform apply -input=false -no-color -lock-timeout="$lock_timeout" "${extra_args[@]}" "$plan_file" 2>&1 | tee "$log"
  code="${PIPESTATUS[0]}"
  set -e
  echo "::endgroup::"
  echo "exit-code=$code" >>"$output"
  if [[ "$code" -ne 0 ]]; then
    if grep -q "Saved plan is stale" "$log"; then
      echo "### terraform apply \`$workdir\`: the saved plan is stale, nothing applied" >>"$summary"
      echo "::error title=terraform apply::the saved plan is stale: the state changed after it was planned (another apply, a destroy or a change by hand). Terraform applied nothing; run the workflow again to plan afresh and review that plan"
    else
      echo "### terraform apply \`$workdir\`: failed (exit $code)" >>"$summary"
      echo "::error title=terraform apply::apply failed in $workdir with exit code $code"
    fi
    exit 1
  fi
  echo "### terraform apply \`$workdir\`: applied the reviewed plan (sha256 \`${TF_PLAN_SHA256}\`)" >>"$summary"
fi
