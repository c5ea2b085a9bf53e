#!/usr/bin/env bash
# Install Terraform or tfcmt at an exact version, verified against the sha256 pinned in this repository
# for that exact release asset (tool-checksums.txt beside this script) before it is extracted or run.
# A checksums file fetched from the same release would catch corruption, not replacement: the pin
# is what a reviewer approved when the version changed (`make pin-tools`, README "Pinned tools").
#
# tfcmt without a pin: its releases carry signed build provenance, so instead of refusing (every job
# that comments would fail until someone pins it) the asset is installed only if `gh attestation
# verify` proves it was built by tfcmt's release workflow, the check tfcmt's install docs give; its
# sha256 is then printed as the line to pin. Terraform has no such fallback: no pin, no install.
#
# usage: install-tool.sh terraform|tfcmt VERSION
# env: RUNNER_TEMP, GITHUB_PATH; TOOL_CHECKSUMS (default: tool-checksums.txt beside this script);
#      TOOL_RELEASES_URL (default: the tool's official download site; tests point it at local files);
#      GH_TOKEN (unpinned tfcmt only: any token, e.g. github.token, for gh to read public attestations);
#      GITHUB_STEP_SUMMARY (optional: where the line to pin is also written).
set -euo pipefail

tool="${1:-}"
version="${2:-}"
version="${version#v}"
checksums="${TOOL_CHECKSUMS:-$(dirname "$0")/tool-checksums.txt}"

if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "::error title=$tool::version must be X.Y.Z, got '${2:-}'"
  exit 1
fi
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *)
    echo "::error title=$tool::no build for machine '$(uname -m)'"
    exit 1
    ;;
esac
case "$tool" in
  terraform)
    asset="terraform_${version}_linux_${arch}.zip"
    url="${TOOL_RELEASES_URL:-https://releases.hashicorp.com/terraform}/${version}/${asset}"
    ;;
  tfcmt)
    asset="tfcmt_linux_${arch}.tar.gz"
    url="${TOOL_RELEASES_URL:-https://github.com/suzuki-shunsuke/tfcmt/releases/download}/v${version}/${asset}"
    ;;
  *)
    echo "::error title=install-tool::tool must be terraform or tfcmt, got '$tool'"
    exit 1
    ;;
esac

key="$tool/$version/$asset"
expected="$(awk -v key="$key" '$2 == key { print $1 }' "$checksums")"
if [[ ! "$expected" =~ ^[0-9a-f]{64}$ ]]; then
  if [[ "$tool" != tfcmt ]]; then
    echo "::error title=$tool::no sha256 pinned for $key in $(basename "$checksums"): run 'make pin-tools' and commit the reviewed result"
    exit 1
  fi
  expected=""
  if ! command -v gh >/dev/null; then
    echo "::error title=$tool::no sha256 pinned for $key in $(basename "$checksums"), and no gh to verify its build provenance with: run 'make pin-tools' and commit the reviewed result"
    exit 1
  fi
  echo "no sha256 pinned for $key in $(basename "$checksums"): verifying its signed build provenance with gh attestation verify instead"
fi

dir="${RUNNER_TEMP:?RUNNER_TEMP is not set}/$tool-$version"
mkdir -p "$dir"
echo "::group::download $key"
curl --fail --silent --show-error --location --retry 3 --output "$dir/$asset" "$url"
echo "::endgroup::"
if [[ -n "$expected" ]]; then
  if ! (cd "$dir" && printf '%s  %s\n' "$expected" "$asset" | sha256sum --check --strict --quiet -); then
    echo "::error title=$tool::$asset does not match the sha256 pinned for $key ($expected): not installing it"
    rm -f "$dir/$asset"
    exit 1
  fi
else
  # The signer is the reusable release workflow that builds tfcmt's releases; -R ties the
  # attestation to tfcmt's own repository (tfcmt's docs, "Verify downloaded binaries": GitHub CLI).
  if ! gh attestation verify "$dir/$asset" -R suzuki-shunsuke/tfcmt \
    --signer-workflow suzuki-shunsuke/go-release-workflow/.github/workflows/release.yaml; then
    echo "::error title=$tool::$asset failed gh attestation verify (no sha256 pinned for $key, and its build provenance could not be verified): not installing it"
    rm -f "$dir/$asset"
    exit 1
  fi
  actual="$(sha256sum "$dir/$asset" | cut -d' ' -f1)"
  pin="$actual  $key"
  echo "::notice title=$tool::$asset verified by its build provenance, sha256 $actual; pin it by adding this line to .github/actions/terraform/tool-checksums.txt (or run 'make pin-tools' and review):"
  echo "$pin"
  if [[ -n "${GITHUB_STEP_SUMMARY:-}" ]]; then
    # An indented block is Markdown's code block: the line can be copied as it is.
    printf '%s verified by gh attestation verify; pin it in .github/actions/terraform/tool-checksums.txt:\n\n    %s\n' \
      "$key" "$pin" >>"$GITHUB_STEP_SUMMARY"
  fi
fi

case "$asset" in
  *.zip) unzip -o -q "$dir/$asset" "$tool" -d "$dir" ;;
  *) tar -xzf "$dir/$asset" -C "$dir" "$tool" ;;
esac
"$dir/$tool" --version
echo "$dir" >>"${GITHUB_PATH:?GITHUB_PATH is not set}"
