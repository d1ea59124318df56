"""Metrics, the overtraining test, feature histograms and the HTML report (NumPy only)."""

from __future__ import annotations

import json
import math
import re
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import mannwhitneyu
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from rootml import plots
from rootml.exceptions import DataError
from rootml.metrics import (
    FeatureHistograms,
    as_probabilities,
    auc,
    compute_metrics,
    ks_overtraining,
    roc_auc,
    roc_curve,
)
from rootml.report import write_metrics_json, write_report

# ------------------------------------------------------------------ ROC and AUC

tied_samples = st.lists(
    st.tuples(st.integers(0, 1), st.integers(0, 4)), min_size=2, max_size=80
).filter(lambda pairs: len({label for label, _ in pairs}) == 2)


@settings(max_examples=80, deadline=None)
@given(tied_samples)
def test_auc_is_the_mann_whitney_statistic_with_ties(pairs):
    y = np.array([label for label, _ in pairs])
    s = np.array([score for _, score in pairs]) / 4.0
    u = mannwhitneyu(s[y == 1], s[y == 0], alternative="two-sided").statistic
    expected = u / (np.sum(y == 1) * np.sum(y == 0))
    assert roc_auc(y, s) == pytest.approx(expected, abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = roc_curve(y, s)
    assert auc(fpr, tpr) == pytest.approx(expected, abs=1e-12)


def test_roc_curve_matches_sklearn_point_for_point():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 3000)
    s = np.round(rng.random(3000) * 0.6 + 0.3 * y, 2)  # many ties
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-15)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-15)
    assert thr[0] == np.inf
    np.testing.assert_array_equal(thr[1:], sk_thr[1:])
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def test_perfect_inverted_and_random_classifiers():
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1], 5000)
    assert roc_auc(y, y.astype(float)) == 1.0
    assert roc_auc(y, 1.0 - y) == 0.0
    assert roc_auc(y, np.full(len(y), 0.3)) == 0.5  # one tie: the diagonal
    assert roc_auc(y, rng.random(len(y))) == pytest.approx(0.5, abs=0.02)


def test_auc_rejects_a_curve_that_goes_back():
    with pytest.raises(ValueError, match="non-decreasing"):
        auc([0.0, 0.5, 0.4, 1.0], [0.0, 0.5, 0.6, 1.0])


# ------------------------------------------------------------------ compute_metrics


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9, 0.5])  # 0.5 is not above the threshold: class 0
    m = compute_metrics(y, p, ["bkg", "sig"])
    assert m["n_test"] == 5
    assert m["counts"] == {"bkg": 2, "sig": 3}
    assert m["positive_class"] == "sig"
    assert m["accuracy"] == pytest.approx(2 / 5)
    # positives scored 0.4, 0.9, 0.5 against negatives 0.1, 0.6: 4 of 6 pairs won
    assert m["auc"] == pytest.approx(4 / 6)
    by_hand = -np.mean(np.log([0.9, 0.4, 0.4, 0.9, 0.5]))
    assert m["log_loss"] == pytest.approx(by_hand, rel=1e-12)
    assert m["log_loss"] == pytest.approx(log_loss(y, p), rel=1e-12)
    assert m["confusion_matrix"] == [[1, 1], [2, 1]]
    assert m["classes"] == ["bkg", "sig"]
    json.dumps(m, allow_nan=False)


def test_log_loss_clips_at_1e_minus_7():
    m = compute_metrics(np.array([0, 1]), np.array([0.0, 0.0]), ["a", "b"])
    assert m["log_loss"] == pytest.approx((-math.log(1 - 1e-7) - math.log(1e-7)) / 2)


def test_multiclass_by_hand():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.6, 0.2]])
    m = compute_metrics(y, p, ["a", "b", "c"])
    assert m["accuracy"] == 0.5
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 1, 1]]
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.8, 0.2])), rel=1e-12)
    assert "auc" not in m
    assert set(m["roc"]) == {"a", "b", "c"}


def test_multiclass_one_vs_rest_matches_sklearn():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 2000)
    logits = rng.normal(size=(2000, 4)) + 1.5 * np.eye(4)[y]
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    m = compute_metrics(y, proba, ["a", "b", "c", "d"])
    for c, name in enumerate("abcd"):
        assert m["auc_ovr"][name] == pytest.approx(roc_auc_score(y == c, proba[:, c]), abs=1e-12)
    macro = roc_auc_score(y, proba, multi_class="ovr", average="macro")
    assert m["auc_macro"] == pytest.approx(macro, abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(proba.argmax(axis=1) == y))
    assert m["log_loss"] == pytest.approx(log_loss(y, proba), rel=1e-9)
    assert np.asarray(m["confusion_matrix"]).sum(axis=1).tolist() == np.bincount(y).tolist()


def test_roc_points_are_downsampled_keeping_the_end_points():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 20_000)
    s = rng.random(20_000) * 0.5 + 0.4 * y
    curve = compute_metrics(y, s, ["b", "s"])["roc"]["s"]
    assert 100 < len(curve["fpr"]) <= 200
    assert (curve["fpr"][0], curve["tpr"][0], curve["thresholds"][0]) == (0.0, 0.0, None)
    assert (curve["fpr"][-1], curve["tpr"][-1]) == (1.0, 1.0)
    assert curve["thresholds"][-1] == pytest.approx(s.min())
    assert np.all(np.diff(curve["fpr"]) >= 0)
    assert np.all(np.diff(curve["tpr"]) >= 0)


def test_as_probabilities():
    np.testing.assert_array_equal(as_probabilities([0.25, 1.0], 2), [[0.75, 0.25], [0.0, 1.0]])
    np.testing.assert_array_equal(as_probabilities([[0.25], [1.0]], 2)[:, 1], [0.25, 1.0])
    p = np.array([[0.2, 0.3, 0.5]])
    np.testing.assert_array_equal(as_probabilities(p, 3), p)


@pytest.mark.parametrize(
    ("y", "scores", "classes", "match"),
    [
        (
            [1, 1, 1],
            [0.2, 0.5, 0.9],
            ["bkg", "sig"],
            (
                r"(?s)AUC is undefined with a single class present.*all of class 'sig'.*'bkg'"
                r".*another class.*more events"
            ),
        ),
        (
            [0, 0],
            [[0.5, 0.3, 0.2]] * 2,
            ["a", "b", "c"],
            r"(?s)AUC is undefined with a single class present.*'a'",
        ),
        ([0, 1, 0], [[0.5, 0.3, 0.2]] * 3, ["a", "b", "c"], r"(?s)undefined for class 'c'"),
        ([], [], ["bkg", "sig"], "the test split is empty"),
        ([0, 1], [0.2, np.nan], ["bkg", "sig"], r"1 non-finite values \(1 NaN\).*row 1"),
        ([0, 1], [0.2, np.inf], ["bkg", "sig"], "non-finite"),
        ([0, 1], [-2.0, 3.0], ["bkg", "sig"], "not logits"),
        ([0, 1], [[0.9, 0.9, 0.9]] * 2, ["a", "b"], r"shape \(2, 3\)"),
        ([0, 2], [0.1, 0.9], ["bkg", "sig"], "class index 2"),
        ([0, 1, 2], [[0.5, 0.3, 0.9]] * 3, ["a", "b", "c"], "sum to 1"),
        ([0, 1, 1], [0.1, 0.9], ["bkg", "sig"], "3 labels but 2 score rows"),
    ],
    ids=[
        "single-class",
        "single-class-multi",
        "missing-class-multi",
        "empty",
        "nan",
        "inf",
        "logits",
        "width",
        "label-range",
        "not-softmax",
        "lengths",
    ],
)
def test_bad_inputs(y, scores, classes, match):
    with pytest.raises(DataError, match=match):
        compute_metrics(np.asarray(y, dtype=np.int32), np.asarray(scores), classes)


# ------------------------------------------------------------------ KS overtraining


def test_ks_flags_a_shift_and_not_the_same_distribution():
    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 3000)
    train = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1)
    same = np.clip(rng.normal(0.3 + 0.4 * y, 0.1), 0, 1)
    shifted = np.clip(rng.normal(0.35 + 0.4 * y, 0.1), 0, 1)
    ok = ks_overtraining(train, y, same, y, ["b", "s"])
    assert ok["overtraining_suspected"] is False
    assert ok["verdict"].startswith("No sign of overtraining")
    assert all(r["pvalue"] >= 0.01 for r in ok["per_class"].values())
    bad = ks_overtraining(train, y, shifted, y, ["b", "s"])
    assert bad["overtraining_suspected"] is True
    assert bad["per_class"]["b"]["overtraining_suspected"] is True
    assert "'b'" in bad["verdict"]
    assert bad["per_class"]["b"]["score"] == "P(s)"
    assert bad["per_class"]["s"]["n_train"] == 3000
    json.dumps(bad, allow_nan=False)


def test_ks_multiclass_compares_each_class_own_probability():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 3000)

    def scores(shift_class):
        z = rng.normal(size=(3000, 3)) + 2.0 * np.eye(3)[y]
        z[y == shift_class, shift_class] += 1.0
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    ks = ks_overtraining(scores(-1), y, scores(2), y, ["a", "b", "c"])
    assert [r["score"] for r in ks["per_class"].values()] == ["P(a)", "P(b)", "P(c)"]
    flagged = [n for n, r in ks["per_class"].items() if r["overtraining_suspected"]]
    assert flagged == ["c"]


def test_ks_needs_every_class_in_both_splits():
    with pytest.raises(DataError, match=r"class 's'.*training split has none"):
        ks_overtraining([0.1, 0.2], [0, 0], [0.1, 0.9], [0, 1], ["b", "s"])


# ------------------------------------------------------------------ feature histograms


def test_feature_histograms_match_numpy_and_count_padding():
    rng = np.random.default_rng(6)
    x = rng.uniform(-1.0, 1.0, (3000, 4)).astype(np.float32)
    x[::7, 2] = -9.0  # padding
    x[::11, 3] = 1.0  # the upper edge belongs to the last bin
    x[5, 0] = 3.0  # outside [lo, hi] and not padding
    x[6, 1] = np.nan
    y = rng.integers(0, 3, 3000)
    h = FeatureHistograms(["a", "b", "c", "d"], -1.0, 1.0, -9.0, ["x", "y", "z"], bins=17)
    for start in range(0, 3000, 700):  # uneven batches
        h.add(x[start : start + 700], y[start : start + 700])
    assert h.counts.shape == (3, 4, 17)  # the state does not grow with the rows
    for c in range(3):
        for f in range(4):
            v = x[y == c, f].astype(np.float64)
            inside = v[(v >= -1.0) & (v <= 1.0)]
            expected, _ = np.histogram(inside, bins=h.edges)
            np.testing.assert_array_equal(h.counts[c, f], expected)
            assert h.missing[c, f] == np.sum(v == -9.0)
            assert h.outside[c, f] == np.sum(np.isnan(v) | ((v != -9.0) & (np.abs(v) > 1)))
    assert h.n_events.tolist() == np.bincount(y, minlength=3).tolist()
    doc = json.loads(json.dumps(h.to_json(), allow_nan=False))
    back = FeatureHistograms.from_json(doc)
    np.testing.assert_array_equal(back.counts, h.counts)
    np.testing.assert_array_equal(back.missing, h.missing)
    np.testing.assert_array_equal(back.outside, h.outside)


def test_feature_histograms_count_a_padding_that_float32_cannot_hold_exactly():
    # the default padding -0.01 is stored in float32 rows as -0.0099999998
    x = np.float32([[-0.01, 0.5], [0.25, -0.01], [-0.01, -0.01]])
    h = FeatureHistograms(["a", "b"], 0.0, 1.0, -0.01, ["bkg", "sig"], bins=4)
    h.add(x, np.array([0, 1, 1]))
    assert h.missing.tolist() == [[1, 0], [1, 2]]
    assert h.outside.sum() == 0


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 60), st.integers(0, 2**32 - 1))
def test_feature_histograms_do_not_depend_on_batching(cut, seed):
    rng = np.random.default_rng(seed)
    x = rng.choice(np.float32([-5.0, -1.0, -0.5, 0.0, 0.3, 1.0]), size=(61, 3))
    y = rng.integers(0, 2, 61)
    one = FeatureHistograms(["a", "b", "c"], -1.0, 1.0, -5.0, ["s", "b"], bins=4)
    one.add(x, y)
    two = FeatureHistograms(["a", "b", "c"], -1.0, 1.0, -5.0, ["s", "b"], bins=4)
    two.add(x[:cut], y[:cut])
    two.add(x[cut:], y[cut:])
    assert one.to_json() == two.to_json()


def test_feature_histograms_reject_a_wrong_width():
    h = FeatureHistograms(["a", "b"], 0.0, 1.0, -1.0, ["s", "b"])
    with pytest.raises(DataError, match=r"shape \[n, 2\]"):
        h.add(np.zeros((3, 3), np.float32), [0, 1, 0])


# ------------------------------------------------------------------ metrics.json


def test_write_metrics_json_is_atomic_and_refuses_nan(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_metrics_json(path, {"auc": np.float32(0.5), "counts": np.array([1, 2])})
    assert json.loads(path.read_text()) == {"auc": 0.5, "counts": [1, 2]}
    with pytest.raises(DataError, match=r"per_class\.b\.pvalue is NaN or inf"):
        write_metrics_json(path, {"per_class": {"b": {"pvalue": float("nan")}}})
    assert json.loads(path.read_text()) == {"auc": 0.5, "counts": [1, 2]}  # untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["metrics.json"]


# ------------------------------------------------------------------ the report

URL = re.compile(r"https?://")
IMG = "data:image/png;base64,"


def _binary_inputs(classes, n=400, seed=7):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    test = np.clip(rng.normal(0.35 + 0.3 * y, 0.15), 0, 1)
    train = np.clip(rng.normal(0.33 + 0.34 * y, 0.15), 0, 1)
    return y, test, train


def test_report_is_self_contained_and_escapes(tmp_path):
    classes = ["<script>alert(1)</script>", "sig & co"]
    y, test, train = _binary_inputs(classes)
    metrics = compute_metrics(y, test, classes)
    ks = ks_overtraining(train, y, test, y, classes)
    hists = FeatureHistograms([f"f{i}" for i in range(5)], 0.0, 1.0, -1.0, classes)
    x = np.random.default_rng(8).random((400, 5)).astype(np.float32)
    x[::3, 4] = -1.0
    hists.add(x, y)
    paths = write_report(
        tmp_path,
        metrics,
        test_scores=test,
        test_y=y,
        train_scores=train,
        train_y=y,
        classes=classes,
        history={
            "loss": [0.7, 0.6, 0.55],
            "val_loss": [0.71, 0.65, 0.66],
            "learning_rate": [1] * 3,
        },
        histograms=hists.to_json(),
        title="test <b>report</b>",
        ks=ks,
        extra={"bundle": "<img src=x onerror=alert(1)>", "seed": 1, "digest": {"a": 1}},
    )
    pngs = ["roc", "scores", "history", "confusion", "features"]
    assert sorted(paths) == sorted([*pngs, "report"])
    for name in pngs:
        assert paths[name] == tmp_path / f"{name}.png"
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["report"].read_text("utf-8")
    assert page.count(IMG) == len(pngs)
    assert not URL.search(page)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "sig &amp; co" in page
    assert "<b>report</b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<img src=x" not in page
    assert re.search(r"AUC \(sig &amp; co vs &lt;script", page)
    assert ks["verdict"].split(":")[0] in page
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{n}.png" for n in pngs] + ["report.html"]
    )


def test_report_multiclass_without_mplhep_and_optional_parts(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mplhep", None)  # import fails: plain matplotlib style
    rng = np.random.default_rng(9)
    classes = ["a", "b", "c"]
    y = rng.integers(0, 3, 600)
    z = rng.normal(size=(600, 3)) + 2.0 * np.eye(3)[y]
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    metrics = compute_metrics(y, p, classes)
    kw = {
        "test_scores": p,
        "test_y": y,
        "train_scores": None,
        "train_y": None,
        "classes": classes,
        "histograms": None,
        "title": "multi",
        "ks": None,
    }
    paths = write_report(tmp_path / "a", metrics, history={"lr": [1.0, 0.5]}, **kw)
    assert sorted(paths) == ["confusion", "report", "roc", "scores"]  # a lone series: no plot
    page = paths["report"].read_text("utf-8")
    assert page.count(IMG) == 3
    assert "AUC, macro average of one vs rest" in page
    again = write_report(tmp_path / "b", metrics, history=None, **kw)
    assert again["report"].read_bytes() == paths["report"].read_bytes()  # deterministic


def test_report_lists_the_features_it_does_not_plot(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "MAX_FEATURE_PLOTS", 2)
    classes = ["b", "s"]
    y, test, _ = _binary_inputs(classes, n=100)
    hists = FeatureHistograms(["f0", "f1", "late_a", "late_b"], 0.0, 1.0, -1.0, classes, bins=5)
    hists.add(np.random.default_rng(10).random((100, 4)).astype(np.float32), y)
    paths = write_report(
        tmp_path,
        compute_metrics(y, test, classes),
        test_scores=test,
        test_y=y,
        train_scores=None,
        train_y=None,
        classes=classes,
        history=None,
        histograms=hists,
        title="t",
        ks=None,
    )
    page = paths["report"].read_text("utf-8")
    assert "2 of 4 features are not plotted" in page
    assert "late_a, late_b" in page


def test_report_checks_inputs_before_writing(tmp_path):
    y, test, _ = _binary_inputs(["b", "s"], n=20)
    metrics = compute_metrics(y, test, ["b", "s"])
    with pytest.raises(DataError, match="the metrics are for classes"):
        write_report(
            tmp_path / "out",
            metrics,
            test_scores=test,
            test_y=y,
            train_scores=None,
            train_y=None,
            classes=["bkg", "sig"],
            history=None,
            histograms=None,
            title="t",
            ks=None,
        )
    assert not (tmp_path / "out").exists()
