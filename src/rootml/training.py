"""Train the user's Keras model on the shards with real epochs, then export the bundle.

MLaaS4HEP fitted each chunk for ``epochs`` epochs and threw it away, never seeded anything and
never used its test split. Here an epoch is one pass over the whole train split, validated on
the val split, with early stopping that restores the best weights. When the train and val
splits together fit in ``in_memory_bytes`` (1 GiB by default: 5M rows of 53 features) they are
read once and fitted from memory, shuffled by Keras's seeded generator; larger ones are
streamed from the shards (shuffled across shards every epoch). Which of the two is chosen
depends only on the data size, so the same inputs always take the same path. Keras runs
``steps_per_execution`` batches per call into TensorFlow (32 unless the model file set it).
Every random choice derives from one seed, and TensorFlow's op determinism is on, so the same
inputs and seed give bit-identical weights on the CPU. A GPU is used when TensorFlow sees one; nothing in the command changes.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from . import __version__
from .bundle import export_bundle
from .exceptions import ConfigError, DataError
from .modelfile import CheckedModel, build_model, model_digest
from .shards import Shard, aligned, blocks, describe, open_shards, split_total
from .transform import TRAIN, VAL

log = logging.getLogger(__name__)

PACKAGES = (
    "rootml",
    "numpy",
    "awkward",
    "uproot",
    "h5py",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "tf2onnx",
    "onnx",
    "onnxruntime",
)


@dataclass(frozen=True)
class TrainOptions:
    epochs: int = 10
    batch_size: int = 256
    shuffle: bool = True
    seed: int = 42
    patience: int = 3  # epochs without val_loss improvement before stopping (0: never stop)
    #: "balanced": each class weighs the same in the loss; "none"; "auto": balanced when the
    #: shards carry event weights (cross-sections make classes differ by orders of magnitude)
    class_weight: str = "auto"
    window: int = 262_144  # rows mixed together when shuffling across shards
    in_memory_bytes: int = 1 << 30  # train + val rows up to this size are fitted from memory
    steps_per_execution: int = 32  # unless the model was compiled with another value

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(
                f"epochs and batch_size must be positive, got {self.epochs}, {self.batch_size}"
            )
        if self.class_weight not in ("none", "balanced", "auto"):
            raise ConfigError(
                f"class_weight must be 'none', 'balanced' or 'auto', got {self.class_weight!r}"
            )


def seed_everything(seed: int) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_dataset(
    shards: Sequence[Shard],
    split: int,
    checked: CheckedModel,
    options: TrainOptions,
    n_classes: int,
    *,
    shuffle: bool,
    class_weight: dict[int, float] | None = None,
    scale: float | None = None,
):
    """A ``tf.data`` pipeline over one split: blocks from the shards (shuffled with a new
    permutation each epoch when ``shuffle``), batched in C++, prefetched. ``scale`` (weighted
    shards: :func:`weight_scale`) multiplies the event weights, times ``class_weight``."""
    import tensorflow as tf

    epoch = [0]

    def generate():
        rng = np.random.default_rng([options.seed, split, epoch[0]]) if shuffle else None
        epoch[0] += 1
        yield from aligned(
            blocks(shards, split, rng=rng, window=options.window), options.batch_size
        )

    weighted = scale is not None
    signature = (tf.TensorSpec([None, _dim(shards)], tf.float32), tf.TensorSpec([None], tf.int32))
    if weighted:
        signature += (tf.TensorSpec([None], tf.float32),)
    ds = tf.data.Dataset.from_generator(generate, output_signature=signature)
    per_class = _per_class(class_weight, n_classes) if weighted else None

    def encode(x, y, *w):
        if per_class is not None:  # Keras takes class or sample weights, not both
            w = tuple(v * tf.gather(tf.constant(per_class), y) for v in w)
        if checked.target == "binary":
            y = tf.cast(y, tf.float32)[:, None]
        elif checked.target == "onehot":
            y = tf.one_hot(y, n_classes)
        return (x, y, *(v * scale for v in w))

    batch = options.batch_size
    n_batches = -(-split_total(shards, split) // batch)
    ds = ds.flat_map(lambda *a: tf.data.Dataset.from_tensor_slices(a).batch(batch))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.map(encode, num_parallel_calls=1, deterministic=True).prefetch(tf.data.AUTOTUNE)


def in_memory_split(
    shards: Sequence[Shard],
    split: int,
    checked: CheckedModel,
    n_classes: int,
    class_weight: dict[int, float] | None = None,
    scale: float | None = None,
) -> tuple[np.ndarray, ...]:
    """``(x, y)`` of one split of all shards in shard order, targets encoded for the model,
    and the event weights ``w`` of weighted shards (times ``scale``, :func:`weight_scale`,
    and ``class_weight`` of each event's class when given)."""
    parts = list(blocks(shards, split))
    x, y, *w = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
    per_class = _per_class(class_weight, n_classes)
    w = [v * np.float32(scale) * (per_class[y] if per_class is not None else 1) for v in w]
    if checked.target == "binary":
        y = y.astype(np.float32)[:, None]
    elif checked.target == "onehot":
        y = np.eye(n_classes, dtype=np.float32)[y]
    return (x, y, *w)


def _per_class(class_weight: dict[int, float] | None, n: int) -> np.ndarray | None:
    if class_weight is None:
        return None
    return np.array([class_weight[i] for i in range(n)], dtype=np.float32)


def weight_scale(shards: Sequence[Shard]) -> float:
    """The factor that makes the train split's event weights average 1: the loss is a mean
    of weighted terms, so weights of 1e-4 (cross-section over generated events) would shrink
    every gradient 10,000-fold; one common factor keeps every ratio between events."""
    import h5py

    total, n = 0.0, 0
    for s in shards:
        with h5py.File(s.path, "r") as h5:
            mask = h5["split"][:] == TRAIN
            total += float(h5["w"][:][mask].astype(np.float64).sum())
            n += int(mask.sum())
    if not total > 0:
        raise DataError(
            f"the train split's event weights sum to {total:g}; training needs a positive "
            "total: check weights.txt and the weight expression"
        )
    return n / total


def _weighted(shards: Sequence[Shard]) -> bool:
    import h5py

    with h5py.File(shards[0].path, "r") as h5:
        return "w" in h5


def _dim(shards: Sequence[Shard]) -> int:
    import h5py

    with h5py.File(shards[0].path, "r") as h5:
        return int(h5["x"].shape[1])


def class_weights(shards: Sequence[Shard], n_classes: int) -> dict[int, float]:
    """``balanced`` weights n / (k * n_c) from the train split's class totals: event counts,
    or the sums of the event weights of weighted shards (each class then weighs the same)."""
    import h5py

    counts = np.zeros(n_classes, dtype=np.float64)
    for s in shards:
        with h5py.File(s.path, "r") as h5:
            mask = h5["split"][:] == TRAIN
            w = h5["w"][:][mask].astype(np.float64) if "w" in h5 else None
            counts += np.bincount(h5["y"][:][mask], weights=w, minlength=n_classes)
    if (counts <= 0).any():
        missing = [i for i in range(n_classes) if counts[i] <= 0]
        raise DataError(
            f"classes {missing} have no training events (or a total weight <= 0); class "
            "weights are undefined: check the labels, the selection and the weights"
        )
    return {i: float(counts.sum() / (n_classes * c)) for i, c in enumerate(counts)}


def train(
    layout: dict,
    shard_paths: Sequence[str | Path],
    out: str | Path,
    *,
    model_path: str | Path | None = None,
    options: TrainOptions = TrainOptions(),
    name: str = "rootml_model",
) -> Path:
    """Train on the train split, validate on val, export the bundle to ``out``."""
    shards = open_shards(shard_paths, layout["digest"], layout["dim"], layout=layout)
    n_train, n_val = split_total(shards, TRAIN), split_total(shards, VAL)
    if n_train == 0:
        raise DataError(
            f"the train split is empty ({describe(shards)}); lower the val/test fractions or "
            "add events"
        )
    classes = layout["labels"]["classes"]
    seed_everything(options.seed)
    checked = build_model(model_path, layout["dim"], len(classes))
    import keras

    if checked.model.steps_per_execution == 1:
        checked.model.steps_per_execution = options.steps_per_execution
    in_memory = (n_train + n_val) * layout["dim"] * 4 <= options.in_memory_bytes
    weighted = _weighted(shards)
    balance = options.class_weight == "balanced" or (options.class_weight == "auto" and weighted)
    weights = class_weights(shards, len(classes)) if balance else None
    folded = weights if weighted else None  # weighted: class weights go into w
    scale = weight_scale(shards) if weighted else None  # one pass over the train weights
    if in_memory:
        train_ds = in_memory_split(shards, TRAIN, checked, len(classes), folded, scale)
        val_ds = (
            in_memory_split(shards, VAL, checked, len(classes), folded, scale) if n_val else None
        )
        shards.verified()  # the rows are read: fit only what preprocess wrote
    else:
        train_ds = make_dataset(
            shards,
            TRAIN,
            checked,
            options,
            len(classes),
            shuffle=options.shuffle,
            class_weight=folded,
            scale=scale,
        )
        val_ds = (
            make_dataset(
                shards,
                VAL,
                checked,
                options,
                len(classes),
                shuffle=False,
                class_weight=folded,
                scale=scale,
            )
            if n_val
            else None
        )
    if folded is not None:
        weights = None
    callbacks = []
    if val_ds is not None and options.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=options.patience, restore_best_weights=True
            )
        )
    elif val_ds is None:
        log.warning("the val split is empty: no validation and no early stopping")
    log.info(
        "train: %s on %s; model %s, %d epochs, batch %d, %s",
        describe(shards),
        layout["dim"],
        checked.source,
        options.epochs,
        options.batch_size,
        "from memory" if in_memory else "streamed from the shards",
    )
    t0 = time.perf_counter()
    try:
        fit = checked.model.fit(
            *(train_ds[:2] if in_memory else (train_ds,)),
            sample_weight=train_ds[2] if in_memory and len(train_ds) > 2 else None,
            validation_data=val_ds,
            epochs=options.epochs,
            batch_size=options.batch_size if in_memory else None,
            callbacks=callbacks,
            class_weight=weights,
            # in memory Keras shuffles (seeded); a stream shuffles across shards itself
            shuffle=options.shuffle and in_memory,
            verbose=2,
        )
    except Exception:
        shards.verified()  # damaged shards are the cause to report, if they are one
        raise
    shards.verified()  # streamed: verified beside the first epochs, before anything is written
    seconds = time.perf_counter() - t0
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    epochs_run = len(next(iter(history.values()), []))
    log.info(
        "train: %d epochs in %.1f s (%.0f events/s)",
        epochs_run,
        seconds,
        n_train * epochs_run / max(seconds, 1e-9),
    )
    reference = next(blocks(shards, VAL if n_val else TRAIN))[0]
    provenance = {
        "rootml_version": __version__,
        "seed": options.seed,
        "options": asdict(options),
        "model_file": str(model_path) if model_path else None,
        "model_sha256": model_digest(model_path),
        "layout_digest": layout["digest"],
        "inputs": [
            {k: f.get(k) for k in ("source", "url", "sha256", "size", "entries", "used")}
            for f in layout["files"]
        ],
        "shards": [str(s.path) for s in shards],
        "events": {"train": n_train, "val": n_val},
        "training_seconds": round(seconds, 3),
        "epochs_run": epochs_run,
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "devices": _devices(),
    }
    return export_bundle(
        checked.model,
        layout,
        out,
        name=name,
        history=history,
        provenance=provenance,
        reference_x=reference,
    )


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def _devices() -> list[str]:
    import tensorflow as tf

    return [d.device_type + ":" + d.name for d in tf.config.list_physical_devices()]
