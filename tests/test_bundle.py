"""The bundle train writes: its files, TFaaS fields, the raw-input SavedModel and ONNX graphs, the manifest."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil

import h5py
import numpy as np
import pytest

from rootml.bundle import INPUT_NAME, load_bundle
from rootml.exceptions import BundleError
from rootml.transform import scale_rows

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]


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


def test_a_bundle_made_before_0_2_still_loads_and_serves(bundle, tmp_path):
    """specs.json and specs_digest, the names before the layout rename, are still read."""
    from rootml.bundle import write_manifest
    from rootml.server.backends import load_model

    old = tmp_path / "old"
    shutil.copytree(bundle, old)
    (old / "layout.json").rename(old / "specs.json")
    params = json.loads((old / "params.json").read_text())
    params["specs_digest"] = params.pop("layout_digest")
    (old / "params.json").write_text(json.dumps(params))
    (old / "manifest.json").unlink()
    write_manifest(old)
    loaded = load_bundle(old)
    assert loaded.layout == load_bundle(bundle).layout
    model = load_model(old, "sample_model", "1")
    assert model.metadata()["parameters"]["layout_digest"] == loaded.layout["digest"]
