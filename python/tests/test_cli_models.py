"""The model file is shared with the command line, in both directions, and fit_parquet runs
the command's engine."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lakemeans
from conftest import blobs, run


@pytest.fixture()
def table_file(tmp_path):
    X = blobs(30_000, 4, 5, seed=11)
    t = pa.table({"id": np.arange(len(X))} | {f"f{j}": X[:, j] for j in range(4)})
    path = tmp_path / "t.parquet"
    pq.write_table(t, path, row_group_size=7_000)
    return path, t


def cli_labels(path):
    return pq.read_table(path).column("cluster").to_numpy()


def test_fit_in_python_predict_from_the_command_line(cli, table_file, tmp_path):
    path, t = table_file
    km = lakemeans.KMeans(5, scale="standard", device="cpu").fit(t.drop(["id"]))
    km.save(tmp_path / "m.json")
    run(cli, "predict", path, "--model", tmp_path / "m.json", "--id", "id",
        "--output", tmp_path / "a.parquet", "--device", "cpu")
    assert np.array_equal(cli_labels(tmp_path / "a.parquet"), km.labels_)


def test_fit_from_the_command_line_predict_in_python(cli, table_file, tmp_path):
    path, t = table_file
    run(cli, "fit", path, "--k", "5", "--exclude", "id", "--model", tmp_path / "m.json",
        "--output", tmp_path / "a.parquet", "--device", "cpu", "--seed", "3")
    km = lakemeans.load(tmp_path / "m.json")
    assert km.n_clusters == 5 and list(km.feature_names_in_) == ["f0", "f1", "f2", "f3"]
    assert np.array_equal(km.predict(t.drop(["id"])), cli_labels(tmp_path / "a.parquet"))
    # The JSON survives a load and save unchanged.
    km.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(
        (tmp_path / "m.json").read_text()
    )


def test_fit_parquet_is_the_command_lines_fit(cli, table_file, tmp_path):
    path, _ = table_file
    run(cli, "fit", path, "--k", "5", "--exclude", "id", "--scale", "none", "--model",
        tmp_path / "cli.json", "--device", "cpu", "--memory-budget", "1MB")
    km = lakemeans.fit_parquet(path, 5, exclude=["id"], device="cpu", memory_budget=1 << 20,
                               id=["id"], output=tmp_path / "a.parquet",
                               model=tmp_path / "py.json")
    cli_model = json.loads((tmp_path / "cli.json").read_text())
    assert json.loads((tmp_path / "py.json").read_text()) == cli_model
    assert json.loads(km.to_json()) == cli_model
    a = pq.read_table(tmp_path / "a.parquet")
    assert a.column_names == ["id", "cluster", "distance"]
    assert np.array_equal(a.column("cluster").to_numpy(), km.labels_)


def test_fit_parquet_errors_are_the_command_lines(tmp_path):
    with pytest.raises(ValueError, match="no-such.parquet"):
        lakemeans.fit_parquet(tmp_path / "no-such.parquet", 3)
    with pytest.raises(ValueError, match="not a lakemeans model"):
        (tmp_path / "bad.json").write_text("{}")
        lakemeans.load(tmp_path / "bad.json")
