"""Training throughput and memory: rootml's streaming training against an in-memory fit.

Side by side in one run, on shards made from ``rootml sample`` with 52-wide rows (12 flat
branches, Jet_pt/Jet_eta capped at 16, Muon_pt at 8 — MLaaS4HEP's measured row width), the
52→16→1 network, the same batch size:

* in-memory: ``model.fit(x, y)`` on the train split loaded into NumPy arrays;
* rootml: the ``tf.data`` pipeline that streams the shards (shuffled across shards);
  events/s from the epochs after the first (the first includes graph tracing);
* peak RSS of ``rootml train`` (a subprocess) on N and on 10xN events;
* wall time of the whole path on 400k events (specs → merge → preprocess → train 5 epochs
  → bundle), against MLaaS4HEP's ~120 s on a 2-core machine (notes/mlaas4hep.md §9).

Prints figures and ratios; asserts nothing.

    python benchmarks/bench_train.py --events 400000
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
from _common import COMPARABLE_CAPS, COMPARABLE_SELECTION, peak_rss

from rootml.config import Settings
from rootml.layout import write_layout
from rootml.merging import merge
from rootml.modelfile import CheckedModel
from rootml.preprocessing import preprocess
from rootml.sample import make_sample
from rootml.shards import open_shards, read_split
from rootml.specs import file_specs
from rootml.storage import write_json
from rootml.training import TrainOptions, make_dataset, seed_everything, train
from rootml.transform import TRAIN

IDS = ("run", "event", "luminosityBlock")
MLAAS4HEP_SECONDS = 120.0
MODEL_PY = """
def model(idim):
    import keras
    m = keras.Sequential([keras.Input((idim,)), keras.layers.Dense(16, activation="relu"),
                          keras.layers.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return m
"""


def data_path(out: Path, events: int, seed: int, chunk: int) -> tuple[dict, list[Path], float]:
    """Sample, specs, merge and preprocess; returns the layout, the shards and the seconds."""
    shutil.rmtree(out, ignore_errors=True)
    files = make_sample(out / "sample", events, seed).files
    t0 = time.perf_counter()
    settings = Settings(
        tree="events",
        chunk_size=chunk,
        selected=COMPARABLE_SELECTION,
        jagged_caps=COMPARABLE_CAPS,
    )
    specs = [
        file_specs(str(f), "events", identifiers=IDS, selected=settings.selected) for f in files
    ]
    layout = merge(specs, settings, labels=["1", "0"])
    shards = preprocess(layout, range(len(layout["chunks"])), out / "shards")
    write_layout(out / "layout.json", layout)
    return layout, shards, time.perf_counter() - t0


def small_model(dim: int):
    import keras

    m = keras.Sequential(
        [
            keras.Input((dim,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return m


class EpochTimer:
    def __init__(self):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_epoch_begin(inner, *_):
                inner.t0 = time.perf_counter()

            def on_epoch_end(inner, *_):
                self.times.append(time.perf_counter() - inner.t0)

        self.times: list[float] = []
        self.callback = _Timer()

    def rate(self, rows: int) -> float:
        steady = self.times[1:] or self.times
        return rows * len(steady) / sum(steady)


def throughput(layout: dict, shard_paths: list[Path], epochs: int, batch: int, seed: int) -> dict:
    shards = open_shards(shard_paths, layout["digest"], layout["dim"])
    parts = [read_split(s.path, TRAIN) for s in shards]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts]).astype(np.float32)[:, None]
    out = {"rows": len(y)}

    seed_everything(seed)
    timer = EpochTimer()
    small_model(layout["dim"]).fit(
        x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer.callback]
    )
    out["in_memory"] = timer.rate(len(y))

    seed_everything(seed)
    model = small_model(layout["dim"])
    options = TrainOptions(epochs=epochs, batch_size=batch, seed=seed)
    ds = make_dataset(
        shards, TRAIN, CheckedModel(model, "binary", "bench"), options, 2, shuffle=True
    )
    timer = EpochTimer()
    model.fit(ds, epochs=epochs, verbose=0, shuffle=False, callbacks=[timer.callback])
    out["streaming"] = timer.rate(len(y))
    return out


def peak_rss_train(work: Path, model_py: Path, epochs: int, batch: int) -> int:
    args = [
        "-q",
        "train",
        "--layout",
        str(work / "layout.json"),
        "--shards",
        str(work / "shards"),
        "--model",
        str(model_py),
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--patience",
        "0",
        "--out",
        str(work / "bundle"),
    ]
    return peak_rss(args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=400_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--chunk-size", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default="bench-out/train")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_py = out / "model.py"
    model_py.write_text(MODEL_PY)

    layout, shards, t_data = data_path(out / "big", args.events, args.seed, args.chunk_size)
    t0 = time.perf_counter()
    options = TrainOptions(
        epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, patience=0
    )
    train(layout, shards, out / "big" / "bundle", model_path=model_py, options=options)
    t_train = time.perf_counter() - t0
    print(
        f"{args.events:,} events of rootml sample, rows of {layout['dim']} floats, "
        f"52->16->1 network, batch {args.batch_size}, {os.cpu_count()} cores"
    )
    print(
        f"time to a trained model: data path {t_data:.1f} s + train {args.epochs} epochs and "
        f"export {t_train:.1f} s = {t_data + t_train:.1f} s (MLaaS4HEP: ~{MLAAS4HEP_SECONDS:.0f} s, "
        f"{MLAAS4HEP_SECONDS / (t_data + t_train):.1f}x faster)"
    )

    tp = throughput(layout, shards, 3, args.batch_size, args.seed)
    print(f"\ntraining throughput on {tp['rows']:,} train rows (epochs 2-3):")
    print(f"  in-memory model.fit on NumPy arrays : {tp['in_memory']:12,.0f} events/s")
    print(
        f"  rootml streaming from shards        : {tp['streaming']:12,.0f} events/s "
        f"= {tp['streaming'] / tp['in_memory']:.2f}x in-memory (target >= 0.8x)"
    )

    small_events = args.events // 10
    data_path(out / "small", small_events, args.seed, args.chunk_size // 10)
    rss_small = peak_rss_train(out / "small", model_py, 2, args.batch_size)
    rss_big = peak_rss_train(out / "big", model_py, 2, args.batch_size)
    print(
        f"\npeak RSS of 'rootml train': {small_events:,} events {rss_small / 2**20:.0f} MiB, "
        f"{args.events:,} events {rss_big / 2**20:.0f} MiB: 10x the data needs "
        f"{rss_big / rss_small:.2f}x the memory (target <= 1.3x)"
    )
    if args.json:
        write_json(
            args.json,
            {
                "events": args.events,
                "data_path_s": t_data,
                "train_s": t_train,
                **tp,
                "rss_small": rss_small,
                "rss_big": rss_big,
            },
        )


if __name__ == "__main__":
    main()
