"""Metrics, the overtraining test, feature histograms and the HTML report (NumPy only)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from rootml.evaluation import (
    FeatureHistograms,
    compute_metrics,
    ks_overtraining,
    roc_auc,
)
from rootml.exceptions import DataError
from rootml.report import write_report


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 1), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
        min_size=2,
        max_size=60,
    )
)
def test_auc_equals_sklearn_with_ties(pairs):
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs])
    if len(set(y.tolist())) < 2:
        return
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_perfect_inverted_and_random_classifiers():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 500)
    assert roc_auc(y, y.astype(float)) == 1.0
    assert roc_auc(y, 1.0 - y) == 0.0
    assert roc_auc(y, rng.random(1000)) == pytest.approx(0.5, abs=0.05)


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = compute_metrics(y, p, ["bkg", "sig"])
    assert m["n_test"] == 4
    assert m["accuracy"] == 0.5
    assert m["auc"] == pytest.approx(0.75)
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["confusion_matrix"] == [[1, 1], [1, 1]]


def test_multiclass_one_vs_rest():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 600)
    logits = rng.normal(size=(600, 3)) + 2.0 * np.eye(3)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = compute_metrics(y, proba, ["a", "b", "c"])
    for c, name in enumerate("abc"):
        auc = m["auc_ovr"][name] if isinstance(m["auc_ovr"], dict) else m["auc_ovr"][c]
        assert auc == pytest.approx(roc_auc_score(y == c, proba[:, c]), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y))
    assert np.asarray(m["confusion_matrix"]).sum() == 600


@pytest.mark.parametrize(
    ("y", "scores", "match"),
    [
        (np.array([1, 1, 1]), np.array([0.2, 0.5, 0.9]), r"(?s)AUC.*undefined.*sig"),
        (np.array([], dtype=int), np.array([]), "empty"),
        (np.array([0, 1]), np.array([0.2, np.nan]), "NaN|non-finite|finite"),
    ],
    ids=["single-class", "empty", "nan"],
)
def test_bad_inputs(y, scores, match):
    with pytest.raises(DataError, match=match):
        compute_metrics(y, scores, ["bkg", "sig"])


def test_ks_flags_a_shift_and_not_the_same_distribution():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], 2000)
    train = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1)
    same = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1)
    shifted = np.clip(rng.normal(0.4 + 0.4 * y, 0.1), 0, 1)
    assert ks_overtraining(train, y, same, y, ["b", "s"])["overtraining_suspected"] is False
    assert ks_overtraining(train, y, shifted, y, ["b", "s"])["overtraining_suspected"] is True


def test_feature_histograms_match_numpy_and_count_padding():
    rng = np.random.default_rng(3)
    x = rng.random((1000, 3)).astype(np.float32)
    x[::7, 2] = -1.0  # padding
    y = rng.integers(0, 2, 1000)
    h = FeatureHistograms(["a", "b", "c"], 0.0, 1.0, -1.0, ["0", "1"], bins=10)
    h.add(x[:400], y[:400])
    h.add(x[400:], y[400:])
    for c in (0, 1):
        for f in range(3):
            values = x[y == c, f]
            expected, _ = np.histogram(values[values != -1.0], bins=10, range=(0.0, 1.0))
            np.testing.assert_array_equal(h.counts[c, f], expected)
            assert h.missing[c, f] == np.sum(values == -1.0)


def test_report_is_self_contained_and_escapes(tmp_path):
    rng = np.random.default_rng(4)
    classes = ["<script>alert(1)</script>", "sig"]
    y = np.repeat([0, 1], 300)
    scores = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    metrics = compute_metrics(y, scores, classes)
    ks = ks_overtraining(scores, y, scores[::-1], y[::-1], classes)
    hists = FeatureHistograms([f"f{i}" for i in range(5)], 0.0, 1.0, -1.0, classes)
    hists.add(rng.random((600, 5)).astype(np.float32), y)
    paths = write_report(
        tmp_path,
        metrics,
        test_scores=scores,
        test_y=y,
        train_scores=scores,
        train_y=y,
        classes=classes,
        history={"loss": [0.7, 0.6], "val_loss": [0.71, 0.65]},
        histograms=hists,
        title="test <report>",
        ks=ks,
        extra={"seed": 1},
    )
    html = (tmp_path / "report.html").read_text()
    for name in ("roc.png", "scores.png", "history.png", "confusion.png", "features.png"):
        assert (tmp_path / name).is_file()
    assert html.count("data:image/png;base64,") >= 5
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "http://" not in html
    assert "https://" not in html
    assert paths
