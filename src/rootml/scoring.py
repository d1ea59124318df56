"""Score events with a bundle: ``rootml evaluate`` on the test split of the shards, and
``rootml predict`` on raw ROOT files.

Evaluation runs the trained network (``model.keras``) on the scaled shard rows; prediction
runs the exported raw-input graph (``model.onnx``) on values read from ROOT files. The two
agree event by event (same float32 scaling arithmetic), which the tests check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import h5py
import numpy as np

from .bundle import Bundle, load_bundle
from .exceptions import BundleError, DataError, LayoutError
from .preprocessing import TEST, TRAIN, raw_rows
from .reading import open_input
from .shards import Shard, describe, open_shards, split_total
from .sources import resolve
from .storage import atomic_path, read_json, write_json

log = logging.getLogger(__name__)

BATCH = 65_536


def as_scores(outputs: np.ndarray, n_classes: int) -> np.ndarray:
    """Binary: 1-D P(class 1) (from a sigmoid or a 2-unit softmax); multi-class: [n, k]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if n_classes == 2:
        return outputs[:, -1] if outputs.ndim == 2 else outputs
    return outputs


def _keras_scores(model, x: np.ndarray, n_classes: int) -> np.ndarray:
    parts = [np.asarray(model(x[i : i + BATCH], training=False)) for i in range(0, len(x), BATCH)]
    out = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
    return as_scores(out, n_classes)


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
                "y": h5["y"][:][mask][::stride],
                "entry": h5["entry"][:][mask][::stride],
                "file": str(h5.attrs["file"]),
            }
        yield rows


def evaluate(
    bundle_path: str | Path,
    shard_paths: Sequence[str | Path],
    out: str | Path,
    *,
    max_train: int = 200_000,
) -> dict:
    """Metrics, plots and the HTML report on the test split; ``metrics.json`` also goes
    into the bundle."""
    from .evaluation import FeatureHistograms, compute_metrics, ks_overtraining
    from .report import draw_features_aside, write_metrics_json, write_report

    bundle = load_bundle(bundle_path)
    layout = bundle.layout
    shards = _shards_for(bundle, shard_paths)
    if split_total(shards, TEST) == 0:
        raise DataError(
            f"the test split is empty ({describe(shards)}); raise the test fraction or add "
            "events, then rerun merge and preprocess"
        )
    classes = layout["labels"]["classes"]
    lo, hi = layout["clip"]
    hists = FeatureHistograms(layout["features"], lo, hi, layout["pad_value"], classes)
    for rows in split_rows(shards, TEST):  # a first pass: the histograms need no model
        hists.add(rows["x"], rows["y"])
    features_png = draw_features_aside(hists) if hists.features else None
    model = bundle.keras_model()
    test = {"y": [], "scores": [], "entry": [], "file": []}
    for rows in split_rows(shards, TEST):
        test["scores"].append(_keras_scores(model, rows["x"], len(classes)))
        test["y"].append(rows["y"])
        test["entry"].append(rows["entry"])
        test["file"].append(np.full(len(rows["y"]), rows["file"], dtype=object))
    test = {k: np.concatenate(v) for k, v in test.items()}
    train_y, train_scores = [], []
    for rows in split_rows(shards, TRAIN, limit=max_train):
        train_y.append(rows["y"])
        train_scores.append(_keras_scores(model, rows["x"], len(classes)))
    train_y = np.concatenate(train_y) if train_y else np.zeros(0, np.int32)
    train_scores = np.concatenate(train_scores) if train_scores else test["scores"][:0]

    metrics = compute_metrics(test["y"], test["scores"], classes)
    ks = (
        ks_overtraining(train_scores, train_y, test["scores"], test["y"], classes)
        if len(train_y)
        else None
    )
    if ks is not None:
        metrics["overtraining"] = ks
    history_path = bundle.path / "history.json"
    history = read_json(history_path) if history_path.exists() else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = {
        "bundle": str(bundle.path),
        "model name": bundle.params.get("name", ""),
        "specs digest": layout["digest"],
        "seed": layout["seed"],
        "features": layout["dim"],
        "events (train / val / test)": describe(shards),
    }
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
        features_png=features_png,
    )
    _write_scores(out / "scores.h5", test, classes)
    write_metrics_json(out / "metrics.json", metrics)
    write_metrics_json(bundle.path / "metrics.json", metrics)
    summary = metrics.get("auc", metrics.get("auc_macro"))
    log.info("evaluate: %d test events, AUC %.4f -> %s", len(test["y"]), summary, out)
    return metrics


def _shards_for(bundle: Bundle, shard_paths: Sequence[str | Path]) -> list[Shard]:
    try:
        return open_shards(shard_paths, bundle.layout["digest"], bundle.layout["dim"])
    except LayoutError as err:
        raise BundleError(
            f"the shards do not belong to bundle {bundle.path}:\n{err}\n"
            "evaluate with the shards the bundle was trained on"
        ) from None


def _write_scores(path: Path, rows: dict, classes: Sequence[str]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.create_dataset("file", data=rows["file"].astype("S"))
        h5.create_dataset("entry", data=rows["entry"])
        h5.create_dataset("y", data=rows["y"])
        h5.create_dataset("scores", data=rows["scores"])
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
