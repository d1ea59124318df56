"""Event weights: per file (weights.txt, or xsec / nevents_generated in input.yml), per event
(input.yml's weight expression), written into the shards as ``w``, used by training as sample
weights (scaled to average 1, classes balanced by default) and by evaluation (weighted AUC,
effective number of events)."""

from __future__ import annotations

import importlib.util
import json

import h5py
import numpy as np
import pytest
import uproot
from rootfiles import write_events
from sklearn.metrics import roc_auc_score

from rootml.config import Settings, load_input
from rootml.exceptions import ConfigError, DataError
from rootml.merging import merge
from rootml.metrics import roc_auc, weighted_metrics, weighted_roc_auc
from rootml.preprocessing import preprocess
from rootml.specs import file_specs
from rootml.workflow.inputs import from_mlaas4hep

IDS = ("run", "event", "luminosityBlock")
WEIGHT = "where(MET > 0, 1 + 0.01 * MET, 1)"


# ------------------------------------------------------------------ the weighted ROC


def test_unit_weights_give_the_plain_auc_and_integer_weights_the_repeated_events():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.normal(y * 0.7, 1.0), 2)  # ties included
    assert weighted_roc_auc(y, s, np.ones(500)) == pytest.approx(roc_auc(y, s), abs=1e-12)
    w = rng.integers(1, 4, 500)
    repeated = roc_auc(np.repeat(y, w), np.repeat(s, w))
    assert weighted_roc_auc(y, s, w) == pytest.approx(repeated, abs=1e-12)
    positive = rng.uniform(0.1, 2.0, 500)
    assert weighted_roc_auc(y, s, positive) == pytest.approx(
        roc_auc_score(y, s, sample_weight=positive), abs=1e-9
    )
    real = rng.uniform(-0.2, 2.0, 500)  # NLO-like: some negative; the pairwise definition
    pos, neg = y == 1, y == 0
    wins = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    pairs = real[pos][:, None] * real[neg][None, :]
    expected = float((wins * pairs).sum() / pairs.sum())
    assert weighted_roc_auc(y, s, real) == pytest.approx(expected, abs=1e-9)


def test_a_class_without_positive_weight_is_an_error():
    with pytest.raises(DataError, match="positive total weight"):
        weighted_roc_auc([0, 1, 1], [0.1, 0.5, 0.9], [1.0, -1.0, 0.5])


def test_weighted_metrics_report_totals_and_effective_events():
    y = np.array([0, 0, 1, 1])
    m = weighted_metrics(
        y, np.array([0.1, 0.4, 0.35, 0.8]), np.array([1.0, 1.0, 2.0, 2.0]), ["0", "1"]
    )
    assert m["sum_weights"] == {"0": 2.0, "1": 4.0}
    assert m["n_effective"] == pytest.approx(36 / 10)
    assert m["auc_weighted"] == pytest.approx(0.75)


# ------------------------------------------------------------------ inputs


def test_file_weights_from_a_list_a_file_or_cross_sections(tmp_path):
    base = "files: [a.root, b.root]\nlabels: [1, 0]\n"
    (tmp_path / "w.txt").write_text("0.5\n2e-3\n")
    for weights, expected in [
        ("[0.5, 2e-3]", (0.5, 2e-3)),
        ("w.txt", (0.5, 2e-3)),
        (
            "[{xsec: 2.0, nevents_generated: 1000}, {xsec: 50, nevents_generated: 2.5e4}]",
            (2e-3, 2e-3),
        ),
    ]:
        (tmp_path / "input.yml").write_text(base + f"weights: {weights}\nweight: 'genWeight'\n")
        inputs, settings = load_input(tmp_path / "input.yml")
        assert inputs.weights == pytest.approx(expected)
        assert settings.derived == {"weight": "genWeight"}


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        ("[1.0]", r"1 file weights for 2 files(.|\n)*in file .*input\.yml"),
        ("[0, 0]", "every file weight is 0"),
        ("w.txt", r"weight 2 is 'x', not a number"),
    ],
)
def test_bad_file_weights_are_named(tmp_path, weights, match):
    (tmp_path / "w.txt").write_text("1\nx\n")
    (tmp_path / "input.yml").write_text(
        f"files: [a.root, b.root]\nlabels: [1, 0]\nweights: {weights}\n"
    )
    with pytest.raises(ConfigError, match=match):
        load_input(tmp_path / "input.yml")


def test_an_mlaas4hep_folder_brings_its_weights_txt(tmp_path):
    (tmp_path / "files.txt").write_text("a.root\nb.root\n")
    (tmp_path / "labels.txt").write_text("1\n0\n")
    (tmp_path / "weights.txt").write_text("1e-4\n2.5e-3\n")
    doc, _ = from_mlaas4hep(tmp_path)
    assert doc["weights"] == "weights.txt"


# ------------------------------------------------------------------ shards


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    return [write_events(d / "s.root", 1500, 1, signal=True), write_events(d / "b.root", 1500, 2)]


def _layout(files, weight=WEIGHT, file_weights=(2.0, 0.5)):
    derived = {"weight": weight} if weight else {}
    specs = [file_specs(str(f), "events", identifiers=IDS, derived=derived) for f in files]
    settings = Settings(tree="events", identifiers=IDS, chunk_size=500, derived=derived)
    return merge(specs, settings, labels=["1", "0"], weights=file_weights)


def test_shards_carry_the_file_weight_times_the_event_weight(files, tmp_path):
    layout = _layout(files)
    assert layout["weighted"] is True
    assert [f["weight"] for f in layout["files"]] == [2.0, 0.5]
    shards = preprocess(layout, range(len(layout["chunks"])), tmp_path / "shards")
    met = uproot.open(files[1])["events"]["MET"].array(library="np")
    last = shards[-1]  # a chunk of b.root
    with h5py.File(last) as h5:
        entry, w = h5["entry"][:], h5["w"][:]
    expected = 0.5 * np.where(met[entry] > 0, 1 + 0.01 * met[entry], 1)
    np.testing.assert_allclose(w, expected.astype(np.float32), rtol=1e-6)
    plain = merge(
        [file_specs(str(f), "events", identifiers=IDS) for f in files],
        Settings(tree="events", identifiers=IDS, chunk_size=500),
        labels=["1", "0"],
    )
    assert "weighted" not in plain
    (first,) = preprocess(plain, [0], tmp_path / "plain")
    with h5py.File(first) as h5:
        assert "w" not in h5  # unweighted runs write what they always wrote


def test_a_weight_that_is_not_finite_names_the_file_and_the_expression(files, tmp_path):
    layout = _layout(files, weight="1 / (MET - MET)")
    with pytest.raises(
        DataError, match=r"not finite \(weight: '1 / \(MET - MET\)'\)(.|\n)*in file .*s\.root"
    ):
        preprocess(layout, [0], tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


def test_merge_takes_weights_on_the_command_line(files, tmp_path):
    from rootml.cli import main

    for i, f in enumerate(files):
        (tmp_path / f"s{i}.json").write_text(
            json.dumps(file_specs(str(f), "events", identifiers=IDS))
        )
    out = tmp_path / "layout.json"
    argv = ["merge", str(tmp_path / "s0.json"), str(tmp_path / "s1.json"), "--labels", "1,0"]
    assert main([*argv, "--tree", "events", "--weights", "3,1e-2", "--out", str(out)]) == 0
    layout = json.loads(out.read_text())
    assert [f["weight"] for f in layout["files"]] == [3.0, 0.01]
    assert (
        main([*argv, "--tree", "events", "--weights", "3", "--out", str(tmp_path / "b.json")]) == 1
    )


# ------------------------------------------------------------------ training and evaluation


@pytest.mark.tensorflow
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow")
def test_weighted_training_and_evaluation(files, tmp_path):
    from rootml.scoring import evaluate
    from rootml.training import TrainOptions, class_weights, train, weight_scale

    # cross-section-like weights, 1e-4 and 1e-2: unscaled they would stall the fit
    layout = _layout(files, file_weights=(1e-4, 1e-2))
    paths = preprocess(layout, range(len(layout["chunks"])), tmp_path / "shards")
    from rootml.shards import open_shards

    shards = open_shards(paths, layout["digest"], layout["dim"], layout=layout)
    scale = weight_scale(shards)
    total, n = 0.0, 0
    for p in paths:
        with h5py.File(p) as h5:
            train_rows = h5["split"][:] == 0
            total += float(h5["w"][:][train_rows].astype(np.float64).sum())
            n += int(train_rows.sum())
    assert scale == pytest.approx(n / total)
    balanced = class_weights(shards, 2)  # by the sums of weights, not the counts
    assert balanced[0] / balanced[1] == pytest.approx(1e-4 / 1e-2, rel=0.5)
    options = TrainOptions(epochs=3, batch_size=128, seed=3, patience=0)
    bundle = train(layout, paths, tmp_path / "bundle", options=options)
    # the same fit streamed from the shards (what a train split over 1 GiB gets) also learns
    streamed = train(
        layout,
        paths,
        tmp_path / "streamed",
        options=TrainOptions(**{**options.__dict__, "in_memory_bytes": 0}),
    )
    assert evaluate(streamed, paths, tmp_path / "r2")["weighted"]["auc_weighted"] > 0.6
    params = json.loads((bundle / "params.json").read_text())
    assert params["weighting"] == {  # the bundle names how its training events were weighted
        "file_weights": {f["basename"]: f["weight"] for f in layout["files"]},
        "event_weight": layout["derived"]["weight"],
    }
    metrics = evaluate(bundle, paths, tmp_path / "report")
    weighted = metrics["weighted"]
    assert weighted["auc_weighted"] > 0.6  # it learned despite weights of 1e-4
    assert 0 < weighted["n_effective"] <= metrics["n_test"]
    assert set(weighted["sum_weights"]) == {"0", "1"}
    html = (tmp_path / "report" / "report.html").read_text()
    assert "AUC, weighted (test)" in html
    assert "effective test events" in html


# ------------------------------------------------------------------ kinematic reweighting


def test_reweighting_to_flat_and_to_a_class(files, tmp_path):
    from rootml.reweighting import histogram

    bins = [[0.0, 50.0, 100.0, 200.0, 400.0, 1000.0]]
    for target in ("flat", "1"):
        derived = {"reweight": {"variables": ["HT"], "bins": bins, "target": target}}
        specs = [file_specs(str(f), "events", identifiers=IDS, derived=derived) for f in files]
        settings = Settings(tree="events", identifiers=IDS, chunk_size=500, derived=derived)
        layout = merge(specs, settings, labels=["1", "0"])
        assert layout["weighted"] is True
        assert set(layout["derived"]["reweight"]["factors"]) == {"0", "1"}
        paths = preprocess(layout, range(len(layout["chunks"])), tmp_path / target)
        ht, y, w = [], [], []
        for p in paths:
            with h5py.File(p) as h5:
                file = h5.attrs["file"]
                entry = h5["entry"][:]
                y.append(h5["y"][:])
                w.append(h5["w"][:])
            source = files[0] if file == "s.root" else files[1]
            ht.append(uproot.open(source)["events"]["HT"].array(library="np")[entry])
        ht, y, w = np.concatenate(ht), np.concatenate(y), np.concatenate(w)
        per_class = {c: histogram([ht[y == c]], bins, w[y == c]) for c in (0, 1)}
        for c in (0, 1):  # each class keeps its number of events as its total weight
            assert per_class[c].sum() == pytest.approx((y == c).sum(), rel=1e-4)
        if target == "flat":
            for c in (0, 1):
                filled = per_class[c][per_class[c] > 0]
                np.testing.assert_allclose(filled, filled.mean(), rtol=1e-4)
        else:  # background reweighted to the signal's shape; the signal keeps weight 1
            np.testing.assert_allclose(w[y == 1], 1.0)
            shape = per_class[1] / per_class[1].sum()
            np.testing.assert_allclose(per_class[0] / per_class[0].sum(), shape, atol=1e-5)


@pytest.mark.parametrize(
    ("reweight", "match"),
    [
        ({"variables": ["Jet_pt"], "bins": [[0, 50, 100]]}, "one value per object"),
        (
            {"variables": ["HTT"], "bins": [[0, 50, 100]]},
            r"neither a branch nor a new variable(.|\n)*'HT'",
        ),
        ({"variables": ["HT"], "bins": [[100, 50]]}, "increasing edges"),
        ({"variables": ["HT"], "bins": [[0, 50]], "target": "2"}, "not a class"),
    ],
    ids=["jagged", "unknown", "edges", "target"],
)
def test_bad_reweighting_is_named(files, reweight, match):
    derived = {"reweight": reweight}

    def specs_and_merge():
        specs = [file_specs(str(f), "events", identifiers=IDS, derived=derived) for f in files]
        merge(specs, Settings(tree="events", identifiers=IDS, derived=derived), labels=["1", "0"])

    with pytest.raises(ConfigError, match=match):
        specs_and_merge()


def test_input_yml_declares_the_reweighting(tmp_path):
    (tmp_path / "input.yml").write_text(
        "files: [a.root, b.root]\nlabels: [1, 0]\n"
        "reweight: {variables: [HT], bins: [[0, 100, 1e9]], target: flat}\n"
    )
    _, settings = load_input(tmp_path / "input.yml")
    assert settings.derived["reweight"]["bins"] == [[0.0, 100.0, 1e9]]  # YAML's '1e9' text too
    (tmp_path / "bad.yml").write_text(
        "files: [a.root]\nlabels: [1]\nreweight: {variables: [HT, MET, nPV], bins: [[0, 1]]}\n"
    )
    with pytest.raises(ConfigError, match=r"reweight/variables(.|\n)*in file .*bad\.yml"):
        load_input(tmp_path / "bad.yml")
    (tmp_path / "edges.yml").write_text(
        "files: [a.root]\nlabels: [1]\nreweight: {variables: [HT], bins: [[100, 0]]}\n"
    )
    with pytest.raises(ConfigError, match=r"increasing edges(.|\n)*in file .*edges\.yml"):
        load_input(tmp_path / "edges.yml")


def test_score_histograms_are_weighted_with_the_events_weights():
    """The report's score distributions count events by their weights (negative ones too)."""
    from rootml import plots

    edges = np.linspace(0, 1, 5)
    values = np.array([0.1, 0.1, 0.6, 0.9])
    weights = np.array([2.0, 1.0, -0.5, 1.5])
    dens, err = plots._density(values, edges, weights)
    np.testing.assert_allclose(dens * np.diff(edges), [3 / 4, 0, -0.5 / 4, 1.5 / 4])
    np.testing.assert_allclose(err * np.diff(edges), [np.sqrt(5) / 4, 0, 0.5 / 4, 1.5 / 4])
    plain, _ = plots._density(values, edges)
    np.testing.assert_allclose(plain * np.diff(edges), [0.5, 0, 0.25, 0.25])
    rng = np.random.default_rng(3)
    p = rng.uniform(size=(200, 2))
    p[:, 0] = 1 - p[:, 1]
    y = rng.integers(0, 2, 200)
    w = rng.uniform(0.1, 5.0, 200)
    with plots.style():
        unweighted = plots.plot_scores(p, y, p, y, ["b", "s"], None, plots.Text())
        weighted = plots.plot_scores(p, y, p, y, ["b", "s"], None, plots.Text(), w, w)
    assert weighted[:8] == b"\x89PNG\r\n\x1a\n"
    assert weighted != unweighted
