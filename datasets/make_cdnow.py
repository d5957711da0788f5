#!/usr/bin/env python3
"""Builds datasets/cdnow_customers.parquet: one row per CDNOW customer with RFM-style features.

Source: CDNOW_master.txt, the CDNOW transaction log (23,570 customers who first bought in the
first quarter of 1997, all their purchases up to the end of June 1998), as shipped inside the
MIT-licensed PyPI package `lifetimes` (file lifetimes/datasets/CDNOW_master.txt in its wheel).

Usage:
    pip download --no-deps lifetimes -d /tmp/lifetimes      # the wheel, nothing installed
    python datasets/make_cdnow.py /tmp/lifetimes/Lifetimes-0.11.3-py3-none-any.whl
    python datasets/make_cdnow.py WHEEL --snapshot 1998-01-01   # the customers as of that day

With --snapshot the table counts only transactions before that day, and recency and tenure
count up to it; it is written as cdnow_customers_<YYYY-MM>.parquet. Without it the snapshot is
1 July 1998, the day after the last transaction, and the file is cdnow_customers.parquet.

The argument may also be the extracted CDNOW_master.txt. Needs pyarrow (the environment printed
by `bash /work/shared/peers/setup.sh`, or any with pyarrow). The output is deterministic.
"""

import datetime as dt
import math
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# The day after the last transaction in the log: recency and tenure count up to it.
SNAPSHOT = dt.date(1998, 7, 1)
MEMBER = "lifetimes/datasets/CDNOW_master.txt"


def read_lines(src: Path):
    if src.suffix == ".whl":
        with zipfile.ZipFile(src) as z:
            return z.read(MEMBER).decode("ascii").splitlines()
    return src.read_text(encoding="ascii").splitlines()


def persona(orders: int, recency: int) -> str:
    """The rule-of-thumb segments a marketing team might already use."""
    if orders == 1:
        return "one-time buyer"
    if recency > 365:
        return "lapsed repeat buyer"
    if orders >= 5 and recency <= 180:
        return "loyal"
    return "active repeat buyer"


def main() -> None:
    args = sys.argv[1:]
    snapshot, name = SNAPSHOT, "cdnow_customers.parquet"
    if len(args) == 3 and args[1] == "--snapshot":
        snapshot = dt.date.fromisoformat(args[2])
        name = f"cdnow_customers_{snapshot:%Y-%m}.parquet"
        args = args[:1]
    if len(args) != 1:
        sys.exit(__doc__)
    lines = read_lines(Path(args[0]))
    customers = {}
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or not parts[0].isdigit():
            continue  # the header
        cid, date, cds, dollars = int(parts[0]), parts[1], int(parts[2]), float(parts[3])
        day = dt.date(int(date[:4]), int(date[4:6]), int(date[6:]))
        if day >= snapshot:
            continue
        c = customers.setdefault(cid, {"days": set(), "cds": 0, "spend": 0.0})
        c["days"].add(day)
        c["cds"] += cds
        c["spend"] += dollars
    cols = {k: [] for k in [
        "customer_id", "cohort", "segment", "recency_days", "frequency", "monetary",
        "avg_order_value", "tenure_days", "total_cds", "log_frequency", "log_monetary",
    ]}
    for cid in sorted(customers):
        c = customers[cid]
        first, last = min(c["days"]), max(c["days"])
        orders = len(c["days"])
        spend = round(c["spend"], 2)
        recency = (snapshot - last).days
        cols["customer_id"].append(cid)
        cols["cohort"].append(f"{first.year}-{first.month:02d}")
        cols["segment"].append(persona(orders, recency))
        cols["recency_days"].append(recency)
        cols["frequency"].append(orders)
        cols["monetary"].append(spend)
        cols["avg_order_value"].append(round(spend / orders, 2))
        cols["tenure_days"].append((snapshot - first).days)
        cols["total_cds"].append(c["cds"])
        cols["log_frequency"].append(math.log(orders))
        cols["log_monetary"].append(math.log1p(spend))
    types = {
        "customer_id": pa.int64(), "cohort": pa.string(), "segment": pa.string(),
        "recency_days": pa.int32(), "frequency": pa.int32(), "monetary": pa.float64(),
        "avg_order_value": pa.float64(), "tenure_days": pa.int32(), "total_cds": pa.int32(),
        "log_frequency": pa.float64(), "log_monetary": pa.float64(),
    }
    table = pa.table({k: pa.array(v, type=types[k]) for k, v in cols.items()})
    out = Path(__file__).resolve().parent / name
    pq.write_table(table, out, compression="zstd")
    print(f"wrote {out.name}: {table.num_rows} customers, {table.num_columns} columns")


if __name__ == "__main__":
    main()
