"""Training: real Keras fits on shards, seeds, the default and documented models, bad model files."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from trained import FAST, edited_shard, make_data, plan_of

from rootml.bundle import load_bundle
from rootml.exceptions import DataError, ModelError
from rootml.modelfile import build_model, probe_model
from rootml.sample import make_sample
from rootml.training import TrainOptions, train
from rootml.transform import TEST

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]


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
    layout, shards, _ = make_data(tmp_path, files=[*sample, extra], labels=("2", "0", "1"))
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


@pytest.mark.parametrize(
    ("text", "outcome"),
    [
        ("import nonexistent_pkg_xyz\n", "importing the model file raised ModuleNotFoundError"),
        ("def model(idim):\n    return None\n", "must return a keras Model, got NoneType"),
        (BAD_MODELS[6][0], "not compiled"),
        (BAD_MODELS[7][0], True),  # a fixed width: built at the probe's, refused with the layout's
        ("def model(idim):\n    assert idim == 20\n", False),  # the width's doing: said later
        ((ROOT / "inputs" / "model.py").read_text(), True),
    ],
    ids=["import", "none", "uncompiled", "fixed-width", "width-assert", "bundled"],
)
def test_the_probe_says_what_fails_at_any_width_and_leaves_the_width_to_the_layout(
    tmp_path, text, outcome
):
    """The workflow's model_probe step (rootml check-model without --layout), run before any
    file is read."""
    path = tmp_path / "model.py"
    path.write_text(text)
    if isinstance(outcome, bool):
        assert probe_model(path) is outcome
    else:
        with pytest.raises(ModelError, match=outcome) as err:
            probe_model(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize(("text", "match"), BAD_MODELS, ids=[m[:24] for _, m in BAD_MODELS])
def test_bad_model_files_named_with_the_fix(tmp_path, text, match):
    path = tmp_path / "model.py"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ModelError, match=match) as info:
        build_model(path, 20, 2)
    assert str(path) in str(info.value)


def test_empty_train_split(data, tmp_path):
    layout, shards, _ = data

    def all_test(h5):
        h5["split"][...] = TEST

    test_only = [edited_shard(shards[0], tmp_path, all_test)]
    with pytest.raises(DataError, match="train split is empty"):
        train(plan_of(layout, test_only), test_only, tmp_path / "b", options=FAST)
