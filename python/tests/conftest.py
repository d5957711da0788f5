"""Shared data and helpers for the Python tests."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def blobs(n: int, d: int, k: int, seed: int) -> np.ndarray:
    """`n` float32 rows around `k` well-separated centres, with some overlap between them."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-10, 10, size=(k, d))
    which = rng.integers(0, k, size=n)
    return (centres[which] + rng.normal(scale=2.0, size=(n, d))).astype(np.float32)


@pytest.fixture(scope="session")
def cli() -> str:
    """The `lakemeans` command: $LAKEMEANS_BIN, the release build, or one on PATH."""
    for c in (os.environ.get("LAKEMEANS_BIN"), ROOT / "target/release/lakemeans", shutil.which("lakemeans")):
        if c and Path(c).is_file():
            return str(c)
    pytest.skip("no lakemeans binary (build with cargo build --release or set LAKEMEANS_BIN)")


def run(cli: str, *args) -> str:
    r = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout
