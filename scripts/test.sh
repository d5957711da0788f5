#!/usr/bin/env bash
# The whole test suite, as CI runs it. The GPU tests run for real: when no Vulkan driver is
# installed, Mesa's software one (lavapipe) is installed first, so the WGSL shaders execute on
# every machine. If no adapter can be found even then, the GPU tests fail and say why.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in mesa-vulkan-drivers libvulkan1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "test.sh: installing ${missing[*]} (software Vulkan for the GPU tests)" >&2
  sudo=""
  [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The HTML report test renders reports in headless Chromium; it fails, saying why, without one.
if ! command -v chromium >/dev/null 2>&1; then
  echo "test.sh: installing chromium (headless browser for the HTML report test)" >&2
  sudo=""
  [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo test --release --locked
