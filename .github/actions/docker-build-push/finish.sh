#!/usr/bin/env bash
# Export the image digest (and, when pushed, the digest-pinned URI) and note them in the job summary.
#
# env: PUSH (true|false), IMAGE (registry/repository when pushed), DIGEST (sha256:…), TAGS (one a
# line, checked by prepare.sh; named in the summary, which tells the CPU and CUDA images apart).
set -euo pipefail

output="${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
summary="${GITHUB_STEP_SUMMARY:?GITHUB_STEP_SUMMARY is not set}"
digest="${DIGEST:-}"
tags="$(printf '%s\n' "${TAGS:-}" | awk 'NF { printf "%s`%s`", (n++ ? ", " : ""), $1 }')"

if [[ "${PUSH:-false}" != "true" ]]; then
  # A build that is not pushed has no registry manifest; buildx reports a digest only sometimes.
  echo "digest=$digest" >>"$output"
  echo "image-uri=" >>"$output"
  echo "### image built, not pushed${digest:+: \`$digest\`}" >>"$summary"
  exit 0
fi
if [[ ! "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "::error title=docker-build-push::the push reported no image digest (got '$digest')"
  exit 1
fi
echo "digest=$digest" >>"$output"
echo "image-uri=${IMAGE:?IMAGE is not set}@$digest" >>"$output"
echo "### image pushed: \`${IMAGE}@${digest}\`${tags:+ (tags $tags)}" >>"$summary"
