#!/usr/bin/env bash
# The whole test suite, as CI runs it. The GPU tests run for real: when no Vulkan driver is
# installed, Mesa's software one (lavapipe) is installed first, so the WGSL shaders execute on
# every machine. If no adapter can be found even then, the GPU tests fail and say why. The HTML
# report test renders reports in headless Chromium, installed here when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# install WHY PACKAGE...: installs Debian packages, as root or through sudo.
install() {
  local why=$1
  shift
  echo "test.sh: installing $* ($why)" >&2
  local sudo=""
  [[ $(id -u) == 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
for pkg in mesa-vulkan-drivers libvulkan1; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  install "software Vulkan for the GPU tests" "${missing[@]}"
fi
command -v chromium >/dev/null 2>&1 || install "headless browser for the HTML report test" chromium

cargo fmt --all -- --check
cargo clippy --release --all-targets --locked -- -D warnings
cargo test --release --locked
