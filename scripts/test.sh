#!/usr/bin/env bash
# The whole test suite, as CI runs it. The GPU tests run for real: when no Vulkan driver is
# installed, Mesa's software one (lavapipe) is installed first, so the WGSL shaders execute on
# every machine. If no adapter can be found even then, the GPU tests fail and say why. The HTML
# report test renders reports in headless Chromium, installed here when missing. The Python
# package is built once into a virtual environment under target/ and tested with pytest, the
# Spark tests on a local Spark with Java 17 (Debian's openjdk-17-jre-headless when missing).
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
command -v java >/dev/null 2>&1 || install "Java for the Spark tests" openjdk-17-jre-headless

# A virtual environment under target/ for the Python tests, and for the local S3 server
# (moto) that the object-store tests in tests/object_store.rs run against.
venv=target/python-venv
if [[ ! -x $venv/bin/python ]]; then
  python3 -m venv "$venv" 2>/dev/null || {
    rm -rf "$venv"
    install "Python virtual environments" python3-venv
    python3 -m venv "$venv"
  }
fi
"$venv/bin/python" -m pip install -q pytest scikit-learn pyarrow polars pandas pyspark 'moto[server]>=5,<6'

# Everything builds with the `ci` profile (Cargo.toml): release optimisation without link-time
# optimisation, so the test binaries, the command line and the Python module share one build
# and link in seconds.
bin=target/ci/lakemeans
cargo fmt --all -- --check
cargo clippy --workspace --profile ci --all-targets --locked -- -D warnings
cargo test --profile ci --locked

# The Python package, built once from this checkout (pip runs maturin on python/), then its
# tests: scikit-learn equivalence, the model file shared with the command line, and Spark.
MATURIN_PEP517_ARGS="--profile ci" "$venv/bin/python" -m pip install -q --force-reinstall --no-deps ./python
LAKEMEANS_BIN=$PWD/$bin "$venv/bin/python" -m pytest -q python/tests

# The CPU kernels exist for AVX-512, AVX2 and a portable fallback, and the suite above ran the
# best this CPU has. Run the kernel, reference, scikit-learn equivalence and thread-determinism
# tests again on every path this CPU can run (LAKEMEANS_ISA picks it), and say which it cannot.
for isa in avx512 avx2 portable; do
  case $isa in
    avx512) need=(avx512f avx2 fma) ;;
    avx2) need=(avx2 fma) ;;
    *) need=() ;;
  esac
  missing=""
  for flag in "${need[@]}"; do
    grep -qw "$flag" /proc/cpuinfo || missing+=" $flag"
  done
  if [[ -n $missing ]]; then
    echo "test.sh: NOT testing the $isa CPU kernels: this CPU lacks$missing" >&2
    continue
  fi
  echo "test.sh: CPU kernels with LAKEMEANS_ISA=$isa" >&2
  got=$(LAKEMEANS_ISA=$isa $bin fit datasets/audience_sample.parquet --k 3 \
    --exclude label --id customer_id --device cpu --json)
  [[ $got == *"threads, $isa"* ]] || { echo "test.sh: LAKEMEANS_ISA=$isa did not take effect: $got" >&2; exit 1; }
  export LAKEMEANS_ISA=$isa
  cargo test --profile ci --locked --lib backend::cpu
  cargo test --profile ci --locked --test reference
  cargo test --profile ci --locked --test equivalence cpu_
  cargo test --profile ci --locked --test cli byte_identical
  unset LAKEMEANS_ISA
done
