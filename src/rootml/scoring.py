"""Score events with a bundle: ``rootml evaluate`` on the test split of the shards, and
``rootml predict`` on raw ROOT files.

Both run the bundle's raw-input graph (``model.onnx``, what a server serves) through
onnxruntime: evaluation on the shard rows turned back into raw values, prediction on values
read from ROOT files. Evaluation so judges the model clients get, needs no TensorFlow, and
agrees with the trained network (``model.keras``) event by event within float32 rounding,
which the tests check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from .bundle import Bundle, load_bundle
from .exceptions import BundleError, DataError, ForeignShardError
from .layout import digest_of
from .reading import open_input
from .shards import Shard, ShardSet, describe, open_shards, split_total
from .sources import resolve
from .storage import atomic_path, read_json, write_json
from .transform import TEST, TRAIN, raw_rows, unscale_rows

log = logging.getLogger(__name__)

BATCH = 65_536


def as_scores(outputs: np.ndarray, n_classes: int) -> np.ndarray:
    """Binary: 1-D P(class 1) (from a sigmoid or a 2-unit softmax); multi-class: [n, k]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if n_classes == 2:
        return outputs[:, -1] if outputs.ndim == 2 else outputs
    return outputs


def _onnx_scorer(bundle: Bundle) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of scaled shard rows through the bundle's raw-input ONNX graph (one thread, so
    the sums are the same on every machine)."""
    session = bundle.onnx_session(threads=1)
    input_name = session.get_inputs()[0].name
    layout, n_classes = bundle.layout, len(bundle.layout["labels"]["classes"])

    def score(x: np.ndarray) -> np.ndarray:
        parts = [
            session.run(None, {input_name: unscale_rows(x[i : i + BATCH], layout)})[0]
            for i in range(0, len(x), BATCH)
        ]
        return as_scores(np.concatenate(parts) if parts else np.zeros((0, 1)), n_classes)

    return score


def split_rows(shards: Sequence[Shard], split: int, limit: int | None = None) -> Iterator[dict]:
    """Rows of one split, shard by shard, with their file name and entry numbers. With
    ``limit``, about that many rows spread over every shard (every k-th row of the split, the
    same k everywhere), so that each file and class is represented as in the whole split: the
    first rows in shard order would all come from the first file."""
    total = split_total(shards, split)
    stride = max(1, -(-total // limit)) if limit else 1
    for shard in shards:
        if not shard.counts[split]:
            continue
        with h5py.File(shard.path, "r") as h5:
            mask = h5["split"][:] == split
            rows = {
                "x": h5["x"][:][mask][::stride],
                # stored in the narrowest type that holds them (preprocessing._narrow)
                "y": h5["y"][:][mask][::stride].astype(np.int32),
                "entry": h5["entry"][:][mask][::stride].astype(np.int64),
                "file": str(h5.attrs["file"]),
            }
            if "w" in h5:
                rows["w"] = h5["w"][:][mask][::stride]
        yield rows


FEATURES_JSON = "features.json"
FEATURES_PNG = "features.png"


def test_histograms(layout: dict, shards: Sequence[Shard]):
    """The per-class histograms of every feature over the test split (no model needed)."""
    from .metrics import FeatureHistograms

    _require_test_events(shards)
    lo, hi = layout["clip"]
    hists = FeatureHistograms(
        layout["features"], lo, hi, layout["pad_value"], layout["labels"]["classes"]
    )
    for rows in split_rows(shards, TEST):
        hists.add(rows["x"], rows["y"])
    return hists


def features(layout_path: str | Path, shard_paths: Sequence[str | Path], out: str | Path) -> Path:
    """``rootml features``: the test split's feature histograms (``features.json``) and their
    plot (``features.png``, skipped when there are no features) in folder ``out``. They need
    only the data, so the workflow draws them while the model trains, and ``rootml evaluate
    --features`` puts them in the report."""
    from .report import draw_features

    layout_path = Path(layout_path)
    layout = read_json(layout_path)
    try:
        shards = open_shards(shard_paths, layout["digest"], layout["dim"], layout=layout)
    except ForeignShardError as err:
        raise DataError(
            f"the shards were not written with {layout_path}:\n{err}\n"
            "pass the merged specs the shards were preprocessed with"
        ) from None
    hists = test_histograms(layout, shards)
    png = draw_features(hists) if hists.features else None
    shards.verified()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"layout_digest": layout["digest"], "histograms": hists.to_json()}
    if png is not None:
        with atomic_path(out / FEATURES_PNG) as tmp:
            tmp.write_bytes(png)
    write_json(out / FEATURES_JSON, doc)  # last: its presence says the folder is complete
    log.info("features: %d features of %s -> %s", len(hists.features), describe(shards), out)
    return out


def _read_features(folder: Path, layout: dict):
    """The histograms and plot ``rootml features`` wrote in ``folder``, checked against the
    bundle's layout: (histograms, a function returning the PNG bytes or None)."""
    from .metrics import FeatureHistograms

    doc_path = folder / FEATURES_JSON
    if not doc_path.is_file():
        raise DataError(
            f"{doc_path} does not exist: pass --features the folder 'rootml features --out' "
            "wrote, or leave --features out to compute the histograms here"
        )
    doc = read_json(doc_path)
    if not isinstance(doc, dict) or digest_of(doc) != layout["digest"]:
        found = digest_of(doc) if isinstance(doc, dict) else None
        raise DataError(
            f"{doc_path} is for layout digest {found!r}, the bundle for {layout['digest']!r}: "
            "draw the features from the shards this bundle was trained on"
        )
    hists = FeatureHistograms.from_json(doc.get("histograms") or {})
    if hists.features != [str(f) for f in layout["features"]]:
        raise DataError(f"{doc_path} histograms other features than the bundle's layout")
    png_path = folder / FEATURES_PNG
    if hists.features and not png_path.is_file():
        raise DataError(f"{png_path} is missing: rerun 'rootml features'")
    return hists, (png_path.read_bytes if hists.features else None)


def _require_test_events(shards: Sequence[Shard]) -> None:
    if split_total(shards, TEST) == 0:
        raise DataError(
            f"the test split is empty ({describe(shards)}); raise the test fraction or add "
            "events, then rerun merge and preprocess"
        )


def evaluate(
    bundle_path: str | Path,
    shard_paths: Sequence[str | Path],
    out: str | Path,
    *,
    max_train: int = 200_000,
    features_dir: str | Path | None = None,
) -> dict:
    """Metrics, plots and the HTML report on the test split, all in ``out``: the bundle is
    left as it is (it is the train step's output; a changed bundle would also invalidate the
    step cache, and REANA mounts it read-only). ``features_dir``: the feature histograms and
    plot already drawn there by :func:`features`, else they are computed here (the plot in a
    forked process meanwhile)."""
    from .metrics import compute_metrics, ks_overtraining, weighted_metrics
    from .plots import history_series
    from .report import draw_aside, draw_features, draw_history, write_metrics_json, write_report

    bundle = load_bundle(bundle_path)
    layout = bundle.layout
    shards = _shards_for(bundle, shard_paths)
    _require_test_events(shards)
    classes = layout["labels"]["classes"]
    # the plots that need no model are drawn in forked processes while this one scores
    drawn = {}
    history_path = bundle.path / "history.json"
    history = read_json(history_path) if history_path.exists() else None
    if history and history_series(history):
        drawn["history"] = draw_aside(lambda: draw_history(history))
    if features_dir is not None:
        hists, png = _read_features(Path(features_dir), layout)
    else:
        hists = test_histograms(layout, shards)  # a first pass: the histograms need no model
        png = draw_aside(lambda: draw_features(hists)) if hists.features else None
    if png is not None:
        drawn["features"] = png
    score = _onnx_scorer(bundle)
    test = {"y": [], "scores": [], "entry": [], "file": []}
    for rows in split_rows(shards, TEST):
        test["scores"].append(score(rows["x"]))
        test["y"].append(rows["y"])
        test["entry"].append(rows["entry"])
        test["file"].append(np.full(len(rows["y"]), rows["file"], dtype=object))
        if "w" in rows:
            test.setdefault("w", []).append(rows["w"])
    test = {k: np.concatenate(v) for k, v in test.items()}
    train_y, train_scores, train_w = [], [], []
    for rows in split_rows(shards, TRAIN, limit=max_train):
        train_y.append(rows["y"])
        train_scores.append(score(rows["x"]))
        if "w" in rows:
            train_w.append(rows["w"])
    train_w = np.concatenate(train_w) if "w" in test and train_w else None
    train_y = np.concatenate(train_y) if train_y else np.zeros(0, np.int32)
    train_scores = np.concatenate(train_scores) if train_scores else test["scores"][:0]

    metrics = compute_metrics(test["y"], test["scores"], classes)
    if "w" in test:
        metrics["weighted"] = weighted_metrics(test["y"], test["scores"], test["w"], classes)
    ks = (
        ks_overtraining(train_scores, train_y, test["scores"], test["y"], classes)
        if len(train_y)
        else None
    )
    if ks is not None:
        metrics["overtraining"] = ks
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {
        "bundle": str(bundle.path),
        "model name": bundle.params.get("name", ""),
        "layout digest": layout["digest"],
        "seed": layout["seed"],
        "features": layout["dim"],
        "events (train / val / test)": describe(shards),
        **_cutflow_rows(layout),
        **_weight_rows(metrics.get("weighted"), layout),
    }
    if any("cutflow" in f for f in layout["files"]):
        metrics["cutflow"] = {f["basename"]: f["cutflow"] for f in layout["files"]}
    shards.verified()
    write_report(
        out,
        metrics,
        test_scores=test["scores"],
        test_y=test["y"],
        train_scores=train_scores,
        train_y=train_y,
        classes=classes,
        history=history,
        histograms=hists,
        title=f"rootml evaluation: {bundle.params.get('name', '')}",
        ks=ks,
        extra=extra,
        drawn=drawn,
        test_w=test.get("w"),
        train_w=train_w if train_w is not None and len(train_w) == len(train_y) else None,
    )
    _write_scores(out / "scores.h5", test, classes)
    write_metrics_json(out / "metrics.json", metrics)
    summary = metrics.get("auc", metrics.get("auc_macro"))
    log.info("evaluate: %d test events, AUC %.4f -> %s", len(test["y"]), summary, out)
    return metrics


def _shards_for(bundle: Bundle, shard_paths: Sequence[str | Path]) -> ShardSet:
    try:
        return open_shards(
            shard_paths, bundle.layout["digest"], bundle.layout["dim"], layout=bundle.layout
        )
    except ForeignShardError as err:
        raise BundleError(
            f"the shards do not belong to bundle {bundle.path}:\n{err}\n"
            "evaluate with the shards the bundle was trained on"
        ) from None


def _weight_rows(weighted: dict | None, layout: dict) -> dict[str, str]:
    """The report's lines on the event weights: how they were made and what they change."""
    if not weighted:
        return {}
    expr = (layout.get("derived") or {}).get("weight")
    per_file = any("weight" in f for f in layout["files"])
    made = " x ".join(
        [*(["the file's weight (weights.txt)"] if per_file else []), *([expr] if expr else [])]
    )
    rows = {"event weight": made}
    auc = weighted.get("auc_weighted", weighted.get("auc_macro_weighted"))
    rows["AUC, weighted (test)"] = f"{auc:.4f}"
    rows["effective test events"] = f"{weighted['n_effective']:,.0f}"
    rows.update({f"total weight {c}": f"{v:.6g}" for c, v in weighted["sum_weights"].items()})
    return rows


def _cutflow_rows(layout: dict) -> dict[str, str]:
    """The report's lines on the selections: the expressions, and each file's cut flow."""
    derived = layout.get("derived")
    if not derived:
        return {}
    rows = {"selection": derived["selection"] or "none"}
    rows.update({f"objects {c}": e for c, e in derived["object_selection"].items()})
    rows.update({f"new variable {n}": e for n, e in derived["new_variables"].items()})
    for f in layout["files"]:
        flow = f.get("cutflow", {})
        steps = [
            f"events {flow.get('events', f['entries']):,} -> {flow.get('events passing', flow.get('events', 0)):,}"
        ]
        steps += [
            f"{k.removesuffix(' objects')} objects {v:,} -> {flow[k + ' passing']:,}"
            for k, v in flow.items()
            if k.endswith(" objects") and k + " passing" in flow
        ]
        terms = [
            (k.removeprefix("passing "), v) for k, v in flow.items() if k.startswith("passing ")
        ]
        if terms:  # the selection's cuts one after the other
            steps.append(" -> ".join(f"{text}: {v:,}" for text, v in terms))
        rows[f"cut flow {f['basename']}"] = "; ".join(steps)
    return rows


def _write_scores(path: Path, rows: dict, classes: Sequence[str]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("file", data=rows["file"].astype("S"))
        h5.create_dataset("entry", data=rows["entry"])
        h5.create_dataset("y", data=rows["y"])
        h5.create_dataset("scores", data=rows["scores"])
        if "w" in rows:
            h5.create_dataset("w", data=rows["w"])
        h5.attrs["classes"] = list(classes)


# ------------------------------------------------------------------ predict


def predict_files(
    bundle_path: str | Path,
    files: Sequence[str],
    *,
    redirector: str | None = None,
    step: int = 100_000,
) -> list[dict]:
    """Scores for every event of each raw ROOT file, through the bundle's ONNX graph."""
    bundle = load_bundle(bundle_path)
    session = bundle.onnx_session()
    input_name = session.get_inputs()[0].name
    return score_files(
        bundle.layout,
        files,
        lambda raw: session.run(None, {input_name: raw})[0],
        redirector=redirector,
        step=step,
    )


def score_files(
    layout: dict,
    files: Sequence[str],
    model: Callable[[np.ndarray], np.ndarray],
    *,
    redirector: str | None = None,
    step: int = 100_000,
) -> list[dict]:
    """Read each file in steps, turn the events into raw rows and score them with ``model``
    (a local ONNX session or a server): ``file``, ``url``, ``entry`` and ``scores`` per file."""
    label = layout["labels"]["branch"]
    names = [n for n in layout["read"] if n != label]
    n_classes = len(layout["labels"]["classes"])
    results = []
    for name in files:
        with open_input(resolve(name, redirector=redirector), layout["tree"]) as root:
            root.require(names)
            parts = [
                as_scores(model(raw_rows(arrays, layout)), n_classes)
                for _, arrays in root.iterate(names, step)
            ]
            results.append(
                {
                    "file": root.source.basename,
                    "url": root.path,
                    "entry": np.arange(root.entries, dtype=np.int64),
                    "scores": np.concatenate(parts) if parts else np.zeros(0),
                }
            )
            log.info("predict: %s: %d events", root.source.basename, root.entries)
    return results


def write_predictions(path: str | Path, results: Sequence[dict], classes: Sequence[str]) -> Path:
    """``.h5`` (one group per file) or ``.csv`` (file, entry, one column per score)."""
    path = Path(path)
    if path.suffix == ".h5":
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
            h5.attrs["classes"] = list(classes)
            for r in results:
                group = h5.create_group(r["file"])
                group.create_dataset("entry", data=r["entry"])
                group.create_dataset("scores", data=r["scores"])
                group.attrs["url"] = r["url"]
        return path
    if path.suffix == ".csv":
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            cols = (
                [f"score_{classes[-1]}"] if len(classes) == 2 else [f"score_{c}" for c in classes]
            )
            f.write(",".join(["file", "entry", *cols]) + "\n")
            for r in results:
                scores = r["scores"].reshape(len(r["entry"]), -1)
                fmt = ",".join([r["file"].replace("%", "%%"), "%d", *["%.8g"] * scores.shape[1]])
                np.savetxt(f, np.column_stack([r["entry"], scores]), fmt=fmt)
        return path
    write_json(
        path,
        [
            {"file": r["file"], "entry": r["entry"].tolist(), "scores": r["scores"].tolist()}
            for r in results
        ],
    )
    return path
