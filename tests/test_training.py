"""Training, the bundle and predict: real Keras training on shards made from uproot-written files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from rootml.bundle import INPUT_NAME, load_bundle
from rootml.config import Settings
from rootml.exceptions import BundleError, DataError, LayoutError, ModelError
from rootml.merging import merge
from rootml.modelfile import build_model
from rootml.preprocessing import preprocess
from rootml.sample import make_sample
from rootml.scoring import as_scores, predict_files
from rootml.specs import file_specs
from rootml.training import TrainOptions, train
from rootml.transform import TEST, scale_rows

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

IDS = ("run", "event", "luminosityBlock")
FAST = TrainOptions(epochs=2, batch_size=128, seed=3, patience=0)


def _data(tmp, events=3000, labels=("1", "0"), files=None, **settings):
    if files is None:
        files = make_sample(tmp / "sample", events, seed=4).files
    specs = [file_specs(str(f), "events", identifiers=IDS) for f in files]
    layout = merge(
        specs,
        Settings(tree="events", chunk_size=700, jagged_cap="p99", **settings),
        labels=list(labels),
    )
    shards = preprocess(layout, range(len(layout["chunks"])), tmp / "shards")
    return layout, shards, files


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _data(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def bundle(data, tmp_path_factory):
    layout, shards, files = data
    model = files[0].parent / "inputs" / "model.py"
    return train(
        layout,
        shards,
        tmp_path_factory.mktemp("bundle") / "b",
        model_path=model,
        options=FAST,
        name="sample_model",
    )


def test_bundle_has_every_file_and_tfaas_fields(bundle, data):
    layout = data[0]
    b = load_bundle(bundle)
    for name in (
        "saved_model.pb",
        "variables",
        "assets",
        "model.keras",
        "model.onnx",
        "params.json",
        "labels.txt",
        "layout.json",
        "history.json",
        "provenance.json",
    ):
        assert (bundle / name).exists(), name
    params = b.params
    assert params["name"] == "sample_model"
    assert params["inputNode"] == params["input_node"] == "serving_default_inputs_input"
    assert params["outputNode"] == params["output_node"] == "StatefulPartitionedCall"
    assert params["features"] == layout["features"]
    assert (bundle / "labels.txt").read_text().split() == ["0", "1"]
    prov = json.loads((bundle / "provenance.json").read_text())
    assert prov["seed"] == 3
    assert prov["layout_digest"] == layout["digest"]
    assert "tensorflow-cpu" in prov["packages"] or "tensorflow" in prov["packages"]
    assert len(json.loads((bundle / "history.json").read_text())["loss"]) == 2
    assert not list(bundle.parent.glob(".*"))  # no temporary directory left


def test_saved_model_signature_takes_raw_values_under_tfaas_names(bundle, data):
    import tensorflow as tf

    layout, shards, _ = data
    sig = tf.saved_model.load(str(bundle)).signatures["serving_default"]
    placeholders = [op.name for op in sig.graph.get_operations() if op.type == "Placeholder"]
    assert INPUT_NAME in placeholders
    with h5py.File(shards[0]) as h5:
        x = h5["x"][:64]
    raw = np.where(x == layout["pad_value"], np.nan, 0).astype(np.float32)
    # rebuild raw rows exactly: preprocess's raw twin on the same events
    from rootml.bundle import unscale_rows

    raw = unscale_rows(x, layout)
    np.testing.assert_allclose(scale_rows(raw, layout), x, atol=1e-6)
    keras_out = np.asarray(load_bundle(bundle).keras_model()(x))
    served = sig(**{INPUT_NAME: tf.constant(raw)})["scores"].numpy()
    np.testing.assert_allclose(served, keras_out, atol=1e-5)


def test_onnx_matches_keras_and_missing_objects_are_padding(bundle, data):
    layout, shards, _ = data
    b = load_bundle(bundle)
    with h5py.File(shards[1]) as h5:
        x = h5["x"][:500]
    from rootml.bundle import unscale_rows

    raw = unscale_rows(x, layout)
    assert np.isnan(raw).any()  # padded jets are sent as NaN
    session = b.onnx_session()
    got = session.run(None, {session.get_inputs()[0].name: raw})[0]
    np.testing.assert_allclose(got, np.asarray(b.keras_model()(x)), atol=1e-5)


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


def test_same_seed_same_weights_other_seed_other_weights(data, tmp_path):
    layout, shards, _ = data
    a = train(layout, shards, tmp_path / "a", options=FAST)
    b = train(layout, shards, tmp_path / "b", options=FAST)
    c = train(
        layout,
        shards,
        tmp_path / "c",
        options=TrainOptions(epochs=2, batch_size=128, seed=4, patience=0),
    )
    wa, wb, wc = (load_bundle(p).keras_model().get_weights() for p in (a, b, c))
    assert all(np.array_equal(u, v) for u, v in zip(wa, wb, strict=True))
    assert not all(np.array_equal(u, v) for u, v in zip(wa, wc, strict=True))


def test_multiclass_default_model(tmp_path):
    sample = make_sample(tmp_path / "s", 1500, seed=9).files
    extra = tmp_path / "third.root"
    shutil.copy(sample[0], extra)
    layout, shards, _ = _data(tmp_path, files=[*sample, extra], labels=("2", "0", "1"))
    bundle = train(layout, shards, tmp_path / "b", options=FAST)
    out = np.asarray(load_bundle(bundle).keras_model()(np.zeros((2, layout["dim"]), np.float32)))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.sum(axis=1), 1, atol=1e-5)


MODEL_FILES = {
    "mlaas4hep_tf_keras": """
        from tensorflow import keras

        def model(idim):
            m = keras.Sequential([keras.layers.Dense(8, activation='relu', input_shape=(idim,), name='inputs'),
                                  keras.layers.Dropout(0.5),
                                  keras.layers.Dense(1, activation='sigmoid')])
            m.compile(optimizer=keras.optimizers.Adam(lr=1e-3), loss=keras.losses.BinaryCrossentropy(),
                      metrics=[keras.metrics.BinaryAccuracy(name='accuracy')])
            return m
    """,
    "mlaas4hep_keras_softmax2": """
        from keras.models import Sequential
        from keras.layers import Dense, Activation

        def model(idim):
            model = Sequential([Dense(8, input_shape=(idim,)), Activation('relu'), Dense(2), Activation('softmax')])
            model.compile(optimizer='adam', loss='categorical_crossentropy', metrics=['accuracy'])
            return model
    """,
}


@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_mlaas4hep_documented_models_train(name, data, tmp_path):
    layout, shards, _ = data
    path = tmp_path / "model.py"
    path.write_text(textwrap.dedent(MODEL_FILES[name]))
    bundle = train(layout, shards, tmp_path / "b", model_path=path, options=FAST)
    assert (bundle / "model.onnx").is_file()


def _compiled(layers: str, loss: str) -> str:
    return (
        f"import keras\ndef model(idim):\n    m = keras.Sequential([{layers}])\n"
        f"    m.compile('adam', '{loss}')\n    return m\n"
    )


BAD_MODELS = [
    (None, "does not exist"),
    ("def model(idim)\n    return 1\n", "syntax error in the model file at line 1"),
    (
        "def build(idim):\n    return None\n",
        r"must define a function model\(idim\)(.|\n)*found: build",
    ),
    ("import nonexistent_pkg_xyz\n", "importing the model file raised ModuleNotFoundError"),
    ("def model(idim):\n    return 42\n", "must return a keras Model, got int"),
    (
        "def model(idim):\n    raise RuntimeError('boom')\n",
        r"model\(\d+\) raised RuntimeError: boom(.|\n)*line 2",
    ),
    (
        "import keras\ndef model(idim):\n    return keras.Sequential([keras.Input((idim,)), keras.layers.Dense(1)])\n",
        "not compiled",
    ),
    (
        _compiled(
            "keras.Input((10,)), keras.layers.Dense(1, activation='sigmoid')", "binary_crossentropy"
        ),
        "takes 10 inputs but the feature layout has",
    ),
    (
        _compiled(
            "keras.Input((idim,)), keras.layers.Dense(1, activation='softmax')",
            "binary_crossentropy",
        ),
        "single unit with softmax",
    ),
    (
        _compiled(
            "keras.Input((idim,)), keras.layers.Dense(3, activation='softmax')",
            "sparse_categorical_crossentropy",
        ),
        "3 outputs but the labels have 2 classes",
    ),
    (
        _compiled("keras.Input((idim,)), keras.layers.Dense(1)", "mse"),
        "does not match a classification",
    ),
]


@pytest.mark.parametrize(("text", "match"), BAD_MODELS, ids=[m[:24] for _, m in BAD_MODELS])
def test_bad_model_files_named_with_the_fix(tmp_path, text, match):
    path = tmp_path / "model.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ModelError, match=match) as info:
        build_model(path, 20, 2)
    assert str(path) in str(info.value)


def test_shards_of_another_layout_rejected(data, tmp_path):
    layout, shards, _ = data
    other = dict(layout, digest="f" * 64)
    with pytest.raises(LayoutError, match=r"built for another layout(.|\n)*in file .*shard-"):
        train(other, shards, tmp_path / "b", options=FAST)
    assert not (tmp_path / "b").exists()


def _edited_shard(shard: Path, folder: Path, edit) -> Path:
    """A copy of ``shard`` changed by ``edit(h5)``, re-recorded as if preprocess wrote it."""
    from rootml.shards import write_shard_record
    from rootml.storage import file_checksums

    copy = folder / shard.name
    shutil.copy(shard, copy)
    with h5py.File(copy, "r+") as h5:
        edit(h5)
        attrs, rows = dict(h5.attrs), len(h5["y"])
    write_shard_record(copy, copy.stat().st_size, file_checksums(copy), rows, attrs)
    return copy


def _plan_of(layout: dict, shards: list[Path]) -> dict:
    """``layout`` with only the chunks of ``shards`` in its plan."""
    ids = set()
    for p in shards:
        with h5py.File(p) as h5:
            ids.add(int(h5.attrs["chunk"]))
    return {**layout, "chunks": [c for c in layout["chunks"] if c["id"] in ids]}


def test_empty_train_split(data, tmp_path):
    layout, shards, _ = data

    def all_test(h5):
        h5["split"][...] = TEST

    test_only = [_edited_shard(shards[0], tmp_path, all_test)]
    with pytest.raises(DataError, match="train split is empty"):
        train(_plan_of(layout, test_only), test_only, tmp_path / "b", options=FAST)


def test_training_refuses_a_shard_set_that_is_not_what_preprocess_wrote(data, tmp_path):
    """A missing shard (a failed preprocess), a flipped byte, a lost record, labels out of
    range: each an error naming the file or chunk and the step to re-run, and no bundle."""
    layout, shards, _ = data
    out = tmp_path / "b"
    with pytest.raises(LayoutError, match=r"chunk \d+ \(.*entries .*\) of the plan has no shard"):
        train(layout, shards[1:], out, options=FAST)
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    copies = [flipped / p.name for p in shards]
    for p, q in zip(shards, copies, strict=True):
        shutil.copy(p, q)
        shutil.copy(p.with_suffix(".json"), q.with_suffix(".json"))
    raw = bytearray(copies[0].read_bytes())
    raw[len(raw) // 2] ^= 0x40
    copies[0].write_bytes(bytes(raw))
    with pytest.raises(LayoutError, match="is not the file preprocess wrote") as err:
        train(layout, copies, out, options=FAST)
    assert str(copies[0]) in str(err.value)
    assert "re-run the preprocess step" in str(err.value)
    copies[0].with_suffix(".json").unlink()
    with pytest.raises(LayoutError, match="has no record"):
        train(layout, copies, out, options=FAST)

    def label_five(h5):
        h5["y"][...] = 5

    relabelled = tmp_path / "relabelled"
    relabelled.mkdir()
    bad = [_edited_shard(shards[0], relabelled, label_five)]
    with pytest.raises(LayoutError, match=r"labels outside 0-1 \(e.g. 5\)") as err:
        train(_plan_of(layout, bad), bad, out, options=FAST)
    assert str(bad[0]) in str(err.value)
    assert not out.exists()


def test_incomplete_bundle_names_missing_files(bundle, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    (copy / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"missing model.onnx(.|\n)*in folder"):
        load_bundle(copy)


def test_bundle_manifest_lists_every_file_and_a_damaged_one_is_named(bundle, tmp_path, caplog):
    manifest = json.loads((bundle / "manifest.json").read_text())["files"]
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {
        "manifest.json",
        "params.json",
    }
    assert set(manifest) == on_disk
    assert any(name.startswith("variables/") for name in manifest)
    for name, record in manifest.items():
        data = (bundle / name).read_bytes()
        assert record["size"] == len(data)
        assert record["sha256"] == hashlib.sha256(data).hexdigest()

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    params = json.loads((copy / "params.json").read_text())
    (copy / "params.json").write_text(json.dumps({**params, "name": "renamed"}))
    assert load_bundle(copy).params["name"] == "renamed"  # TFaaS metadata may be rewritten
    onnx = bytearray((copy / "model.onnx").read_bytes())
    onnx[len(onnx) // 2] ^= 0xFF
    (copy / "model.onnx").write_bytes(bytes(onnx))
    with pytest.raises(BundleError, match=r"bundle file model\.onnx is not the one(.|\n)*re-run"):
        load_bundle(copy)
    shutil.copy(bundle / "model.onnx", copy / "model.onnx")
    (copy / "history.json").unlink()
    with pytest.raises(BundleError, match=r"bundle file history\.json is missing"):
        load_bundle(copy)
    shutil.copy(bundle / "history.json", copy / "history.json")
    (copy / "manifest.json").unlink()
    with caplog.at_level("WARNING", logger="rootml.bundle"):
        load_bundle(copy)  # a bundle made before manifests: loaded, with a warning
    assert "no manifest.json" in caplog.text


# ------------------------------------------------------------------ evaluate


@pytest.fixture(scope="module")
def evaluated(bundle, data, tmp_path_factory):
    from rootml.scoring import evaluate

    out = tmp_path_factory.mktemp("report")
    before = _tree_digest(bundle)
    metrics = evaluate(bundle, data[1], out)
    # the bundle is train's output: evaluation writes nothing into it (a changed bundle made
    # every --resume retrain, and REANA mounts it read-only)
    assert _tree_digest(bundle) == before
    return out, metrics


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


def test_evaluate_refuses_foreign_shards_and_empty_test_split(bundle, data, tmp_path):
    from rootml.scoring import evaluate

    _, shards, files = data
    _, other_shards, _ = _data(tmp_path / "other", files=files, labels=("0", "1"))
    with pytest.raises(BundleError, match="do not belong to bundle"):
        evaluate(bundle, other_shards, tmp_path / "r1")
    # the bundle's own shards, one missing: said as such, not as someone else's shards
    with pytest.raises(LayoutError, match="of the plan has no shard"):
        evaluate(bundle, shards[1:], tmp_path / "r1")

    def no_test_rows(h5):
        h5["split"][...] = 0

    no_test = [_edited_shard(p, tmp_path, no_test_rows) for p in shards]
    with pytest.raises(DataError, match="test split is empty"):
        evaluate(bundle, no_test, tmp_path / "r2")
    assert not (tmp_path / "r2" / "report.html").exists()
