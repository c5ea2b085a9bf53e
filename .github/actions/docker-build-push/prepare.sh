#!/usr/bin/env bash
# Check the image tags and repository, build the full image references, and, when pushing, ask
# ECR whether the first tag already exists (tags are immutable there: a re-run must not rebuild).
#
# env: PUSH (true|false), REGISTRY (from the ECR login; needed when pushing), REPOSITORY, TAGS (one a line).
# Outputs: image, refs (multi-line), existing-digest (empty unless the tag is already in ECR).
set -euo pipefail

push="${PUSH:-false}"
repository="${REPOSITORY:-}"
output="${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"

case "$push" in
  true | false) ;;
  *)
    echo "::error title=docker-build-push::push must be true or false, got '$push'"
    exit 1
    ;;
esac
if [[ ! "$repository" =~ ^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$ ]]; then
  echo "::error title=docker-build-push::repository is not an ECR repository name: '$repository' (set the repository variable ECR_REPOSITORY)"
  exit 1
fi

tags=()
while read -r tag; do
  if [[ -z "$tag" ]]; then continue; fi
  if [[ "$tag" == "latest" ]]; then
    echo "::error title=docker-build-push::the tag 'latest' is refused: images are addressed by git sha and digest only"
    exit 1
  fi
  if [[ ! "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
    echo "::error title=docker-build-push::'$tag' is not a valid image tag"
    exit 1
  fi
  tags+=("$tag")
done <<<"${TAGS:-}"
if [[ "${#tags[@]}" -eq 0 ]]; then
  echo "::error title=docker-build-push::no image tags given"
  exit 1
fi

if [[ "$push" == "true" ]]; then
  if [[ -z "${REGISTRY:-}" ]]; then
    echo "::error title=docker-build-push::no ECR registry from the login step; cannot push"
    exit 1
  fi
  image="$REGISTRY/$repository"
else
  image="$repository"
fi

delimiter="refs_$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
{
  echo "image=$image"
  echo "refs<<$delimiter"
  for tag in "${tags[@]}"; do echo "$image:$tag"; done
  echo "$delimiter"
} >>"$output"

existing=""
if [[ "$push" == "true" ]]; then
  set +e
  found="$(aws ecr describe-images --repository-name "$repository" --image-ids "imageTag=${tags[0]}" \
    --query 'imageDetails[0].imageDigest' --output text 2>"$RUNNER_TEMP/describe-images.err")"
  code=$?
  set -e
  if [[ "$code" -eq 0 && "$found" =~ ^sha256:[0-9a-f]{64}$ ]]; then
    existing="$found"
    echo "$image:${tags[0]} is already in ECR as $existing: not rebuilding (ECR tags are immutable)"
  elif grep -q "ImageNotFoundException" "$RUNNER_TEMP/describe-images.err"; then
    echo "$image:${tags[0]} is not in ECR yet: building it"
  else
    echo "::error title=docker-build-push::could not look up $repository:${tags[0]} in ECR (exit $code): $(cat "$RUNNER_TEMP/describe-images.err")"
    exit 1
  fi
fi
echo "existing-digest=$existing" >>"$output"
