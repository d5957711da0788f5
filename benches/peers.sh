#!/usr/bin/env bash
# lakemeans against faiss-cpu and scikit-learn on the workloads of benches/peers.py, end to end,
# in one command. Extra arguments go to peers.py, e.g. --threads 1, --with-sklearn, --repeats 5.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=${PEERS_DIR:-../shared/peers}
py=$(bash "$peers/setup.sh")
cargo build --release --locked -q
exec "$py" benches/peers.py --lakemeans target/release/lakemeans --peers "$peers/kmeans_peers.py" "$@"
