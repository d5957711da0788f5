#!/usr/bin/env bash
# lakemeans against faiss-cpu and the memory-copy bound per Lloyd iteration, at the common
# shape (benches/small_k.py). Extra arguments go to small_k.py, e.g. --dims 8,16,32
# --ks 4,8,16,64, or another --lakemeans NAME=PATH to compare with an earlier build.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS_DIR:-../shared/peers}
py=$(bash "$peers/setup.sh")
cargo build --release --locked -q
exec "$py" benches/small_k.py --peers "$peers/kmeans_peers.py" "$@" --lakemeans "lakemeans=target/release/lakemeans"
