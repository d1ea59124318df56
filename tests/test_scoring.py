"""Scoring: the rows of a split as evaluation reads them (no model), and evaluate and predict
with a trained bundle (TensorFlow tests)."""

from __future__ import annotations

import importlib.util
import json

import h5py
import numpy as np
import pytest
from trained import edited_shard, make_data, tree_digest

from rootml.bundle import load_bundle
from rootml.exceptions import BundleError, DataError, LayoutError
from rootml.scoring import as_scores, predict_files, split_rows
from rootml.shards import Shard
from rootml.transform import TEST, TRAIN


def _shard(path, label: int, n: int) -> Shard:
    split = np.where(np.arange(n) % 5 == 0, TEST, TRAIN).astype(np.int8)
    with h5py.File(path, "w") as h5:
        h5["x"] = np.full((n, 2), label, np.float32)
        h5["y"] = np.full(n, label, np.int32)
        h5["split"] = split
        h5["entry"] = np.arange(n, dtype=np.int64)
        h5.attrs["file"] = f"file{label}.root"
    counts = np.bincount(split, minlength=3)
    return Shard(path, n, tuple(int(c) for c in counts))


def test_a_limited_sample_of_a_split_comes_from_every_shard(tmp_path):
    # the first file alone holds more train rows than the limit (a 1M-event run's first file):
    # a sample from the head would miss the second class and the KS test would fail
    shards = [_shard(tmp_path / "a.h5", 0, 5000), _shard(tmp_path / "b.h5", 1, 1000)]
    rows = list(split_rows(shards, TRAIN, limit=1000))
    y = np.concatenate([r["y"] for r in rows])
    assert len(y) <= 1000 + len(shards)
    # 4,800 train rows: every 5th of each file, so both files in the split's proportions
    assert np.bincount(y).tolist() == [800, 160]
    assert all((r["x"][:, 0] == r["y"]).all() for r in rows)


def test_without_a_limit_every_row_of_the_split(tmp_path):
    shards = [_shard(tmp_path / "a.h5", 0, 50), _shard(tmp_path / "b.h5", 1, 20)]
    rows = list(split_rows(shards, TEST))
    assert [len(r["y"]) for r in rows] == [10, 4]
    assert rows[1]["entry"].tolist() == [0, 5, 10, 15]


# ------------------------------------------------------------------ with a trained bundle

NEEDS_TF = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"
)


@pytest.mark.tensorflow
@NEEDS_TF
def test_predict_on_raw_root_equals_scores_on_shards(bundle, data):
    layout, shards, files = data
    [result] = predict_files(bundle, [str(files[0])])
    model = load_bundle(bundle).keras_model()
    with h5py.File(shards[0]) as h5:
        assert h5.attrs["file"] == files[0].name
        x, entry = h5["x"][:], h5["entry"][:]
    expected = as_scores(np.asarray(model(x)), 2)
    np.testing.assert_allclose(result["scores"][entry], expected, atol=1e-5)
    assert len(result["scores"]) == layout["files"][0]["entries"]


@pytest.fixture(scope="module")
def evaluated(bundle, data, tmp_path_factory):
    from rootml.scoring import evaluate

    out = tmp_path_factory.mktemp("report")
    before = tree_digest(bundle)
    metrics = evaluate(bundle, data[1], out)
    # the bundle is train's output: evaluation writes nothing into it (a changed bundle made
    # every --resume retrain, and REANA mounts it read-only)
    assert tree_digest(bundle) == before
    return out, metrics


@pytest.mark.tensorflow
@NEEDS_TF
def test_evaluate_writes_metrics_plots_and_report_on_the_test_split(evaluated, bundle, data):
    out, metrics = evaluated
    shards = data[1]
    n_test = 0
    for p in shards:
        with h5py.File(p) as h5:
            n_test += int((h5["split"][:] == TEST).sum())
    assert metrics["n_test"] == n_test
    assert 0.5 < metrics["auc"] <= 1.0
    assert len(metrics["confusion_matrix"]) == 2
    for name in (
        "metrics.json",
        "report.html",
        "roc.png",
        "scores.png",
        "history.png",
        "confusion.png",
        "features.png",
        "scores.h5",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text())["auc"] == metrics["auc"]
    assert not (bundle / "metrics.json").exists()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5
    assert "http://" not in html
    assert "https://" not in html


@pytest.mark.tensorflow
@NEEDS_TF
def test_evaluation_scores_equal_predict_on_raw_files(evaluated, bundle, data):
    out, _ = evaluated
    files = data[2]
    with h5py.File(out / "scores.h5") as h5:
        names = h5["file"][:].astype(str)
        entries, scores = h5["entry"][:], h5["scores"][:]
    for result in predict_files(bundle, [str(f) for f in files]):
        mine = names == result["file"]
        assert mine.any()
        np.testing.assert_allclose(result["scores"][entries[mine]], scores[mine], atol=1e-5)


@pytest.mark.tensorflow
@NEEDS_TF
def test_evaluate_refuses_foreign_shards_and_empty_test_split(bundle, data, tmp_path):
    from rootml.scoring import evaluate

    _, shards, files = data
    _, other_shards, _ = make_data(tmp_path / "other", files=files, labels=("0", "1"))
    with pytest.raises(BundleError, match="do not belong to bundle"):
        evaluate(bundle, other_shards, tmp_path / "r1")
    # the bundle's own shards, one missing: said as such, not as someone else's shards
    with pytest.raises(LayoutError, match="of the plan has no shard"):
        evaluate(bundle, shards[1:], tmp_path / "r1")

    def no_test_rows(h5):
        h5["split"][...] = 0

    no_test = [edited_shard(p, tmp_path, no_test_rows) for p in shards]
    with pytest.raises(DataError, match="test split is empty"):
        evaluate(bundle, no_test, tmp_path / "r2")
    assert not (tmp_path / "r2" / "report.html").exists()
