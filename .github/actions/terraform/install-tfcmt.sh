#!/usr/bin/env bash
# Install a pinned tfcmt release, verified before use: the tarball's sha256 must match the entry
# for it in the release's checksums file (and the pinned TFCMT_SHA256, when one is given).
#
# env: TFCMT_VERSION (e.g. 4.14.18), TFCMT_SHA256 (optional), RUNNER_TEMP, GITHUB_PATH,
#      TFCMT_RELEASES_URL (default: the GitHub releases of suzuki-shunsuke/tfcmt; tests point it at files).
set -euo pipefail

version="${TFCMT_VERSION#v}"
if [[ ! "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "::error title=tfcmt::tfcmt-version must be X.Y.Z, got '${TFCMT_VERSION:-}'"
  exit 1
fi

case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *)
    echo "::error title=tfcmt::no tfcmt build for machine '$(uname -m)'"
    exit 1
    ;;
esac

releases="${TFCMT_RELEASES_URL:-https://github.com/suzuki-shunsuke/tfcmt/releases/download}"
asset="tfcmt_linux_${arch}.tar.gz"
sums="tfcmt_${version}_checksums.txt" # goreleaser's default checksum file name for project tfcmt
dir="${RUNNER_TEMP:?RUNNER_TEMP is not set}/tfcmt-${version}"
mkdir -p "$dir"

echo "::group::download tfcmt ${version} (${asset})"
curl --fail --silent --show-error --location --retry 3 --output "$dir/$asset" "$releases/v$version/$asset"
curl --fail --silent --show-error --location --retry 3 --output "$dir/$sums" "$releases/v$version/$sums"
echo "::endgroup::"

expected="$(awk -v name="$asset" '$2 == name { print $1 }' "$dir/$sums")"
if [[ ! "$expected" =~ ^[0-9a-f]{64}$ ]]; then
  echo "::error title=tfcmt::$sums has no sha256 entry for $asset"
  exit 1
fi
if [[ -n "${TFCMT_SHA256:-}" && "$expected" != "$TFCMT_SHA256" ]]; then
  echo "::error title=tfcmt::$sums lists $expected for $asset, but the pinned tfcmt-sha256 is $TFCMT_SHA256"
  exit 1
fi
if ! (cd "$dir" && printf '%s  %s\n' "$expected" "$asset" | sha256sum --check --strict --quiet -); then
  echo "::error title=tfcmt::$asset does not match its sha256 $expected from $sums: not installing it"
  rm -f "$dir/$asset"
  exit 1
fi

tar -xzf "$dir/$asset" -C "$dir" tfcmt
"$dir/tfcmt" --version
echo "$dir" >>"${GITHUB_PATH:?GITHUB_PATH is not set}"
