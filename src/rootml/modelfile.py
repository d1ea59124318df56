"""The user's ``model.py``: load it, call ``model(idim)``, and check the result before training.

MLaaS4HEP imported ``model.py`` by module name (so it had to sit on ``sys.path``) and trained
whatever came back; its own two-unit softmax example then crashed inside ``fit``, and a
one-unit softmax (its rucio example) silently never learned. Here the file is loaded by path
and the model is checked against the labels and the feature layout first, with a message that
says what to change.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .exceptions import ModelError

log = logging.getLogger(__name__)

BINARY_LOSSES = {"binary_crossentropy", "binarycrossentropy", "binary_focal_crossentropy"}
SPARSE_LOSSES = {"sparse_categorical_crossentropy", "sparsecategoricalcrossentropy"}
ONEHOT_LOSSES = {
    "categorical_crossentropy",
    "categoricalcrossentropy",
    "categorical_focal_crossentropy",
}


@dataclass(frozen=True)
class CheckedModel:
    """A compiled Keras model that fits the task, and how its targets must be encoded."""

    model: Any
    target: str  # "binary" (y as 0/1 floats), "sparse" (class index) or "onehot"
    source: str  # the model file, or "default"


def load_model_function(path: str | Path) -> Callable[[int], Any]:
    """Import ``path`` by file name and return its ``model`` function."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; give the path of your model.py")
    name = "rootml_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {path} as Python; name it model.py")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ModelError(syntax_message(err, path)) from None
    except Exception as err:  # noqa: BLE001  user code may raise anything; we name it
        raise ModelError(
            f"importing the model file raised {type(err).__name__}: {err}\n"
            f"{_user_frames(err, path)}in file {path}"
        ) from None
    fn = getattr(module, "model", None)
    if fn is None or not callable(fn):
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ModelError(
            "the model file must define a function model(idim) returning a compiled Keras "
            f"model (as MLaaS4HEP expects); found: {', '.join(found) or 'no functions'}\n"
            f"in file {path}"
        )
    return fn


def syntax_message(err: SyntaxError, path: Path) -> str:
    """What a syntax error in the model file says, wherever it is found."""
    return (
        f"syntax error in the model file at line {err.lineno}: {err.msg}\n"
        f"    {(err.text or '').strip()}\nin file {path}"
    )


def _user_frames(err: BaseException, path: Path) -> str:
    frames = [f for f in traceback.extract_tb(err.__traceback__) if Path(f.filename) == path]
    return "".join(f"    line {f.lineno}: {f.line}\n" for f in frames)


def default_model(idim: int, n_classes: int):
    """A sensible small network: two hidden layers with dropout."""
    import keras

    units, activation, loss = (
        (1, "sigmoid", "binary_crossentropy")
        if n_classes == 2
        else (n_classes, "softmax", "sparse_categorical_crossentropy")
    )
    model = keras.Sequential(
        [
            keras.Input((idim,), name="inputs"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(units, activation=activation),
        ],
        name="rootml_default",
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
    return model


def build_model(path: str | Path | None, idim: int, n_classes: int) -> CheckedModel:
    """Call ``model(idim)`` from ``path`` (or the default network) and check the result."""
    if path is None:
        target = "binary" if n_classes == 2 else "sparse"
        return CheckedModel(default_model(idim, n_classes), target, "default")
    fn = load_model_function(path)
    where = f"in file {path}"
    with warnings.catch_warnings(record=True) as caught, keras2_compat():
        warnings.simplefilter("always")
        try:
            model = fn(idim)
        except Exception as err:  # noqa: BLE001  user code may raise anything; we name it
            raise ModelError(
                f"model({idim}) raised {type(err).__name__}: {err}\n"
                f"{_user_frames(err, Path(path))}{where}"
            ) from None
    for w in caught:
        log.warning("model.py: %s", w.message)
    _check_returned(model, where)
    if not model.built:
        model.build((None, idim))
    in_dim = model.inputs[0].shape[-1] if model.inputs else None
    if in_dim is not None and in_dim != idim:
        raise ModelError(
            f"the model takes {in_dim} inputs but the feature layout has {idim}; build the "
            f"first layer from the idim argument (keras.Input((idim,))) instead of a fixed "
            f"number\n{where}"
        )
    units = int(model.outputs[0].shape[-1])
    activation = _output_activation(model)
    loss = _loss_name(model.loss)
    return CheckedModel(model, _target(loss, n_classes, units, activation, where), str(path))


def _check_returned(model: Any, where: str) -> None:
    """What ``model(idim)`` returned is a compiled Keras model."""
    import keras

    if not isinstance(model, keras.Model):
        raise ModelError(
            f"model(idim) must return a keras Model, got {type(model).__name__}; "
            f"end the function with 'return model'\n{where}"
        )
    if getattr(model, "optimizer", None) is None or getattr(model, "loss", None) is None:
        raise ModelError(
            "the model is not compiled; call model.compile(optimizer=..., loss=...) before "
            f"returning it\n{where}"
        )


#: the input width model(idim) is first tried with, before the files are read
PROBE_WIDTH = 8


def probe_model(path: str | Path) -> bool:
    """Import ``path`` and call ``model(PROBE_WIDTH)``: what fails whatever the input width
    (an import that raises, a model not returned or not compiled) is said before any file is
    read. True when the probe built a compiled model; False when ``model(PROBE_WIDTH)``
    raised, which may be the width's doing: :func:`build_model` with the layout's width says."""
    fn = load_model_function(path)
    with warnings.catch_warnings(), keras2_compat():
        warnings.simplefilter("ignore")  # build_model, with the real width, shows them
        try:
            model = fn(PROBE_WIDTH)
        except Exception:  # noqa: BLE001  maybe the width: the layout's check names it
            return False
    _check_returned(model, f"in file {path}")
    return True


@contextlib.contextmanager
def keras2_compat() -> Iterator[None]:
    """Let Keras-2-era model files run on Keras 3 while ``model(idim)`` is called.

    MLaaS4HEP's documented examples build ``keras.optimizers.Adam(lr=1e-3)``; Keras 3 renamed
    ``lr`` to ``learning_rate`` and rejects the old name. The optimizers accept it here, with
    a warning naming the new spelling.
    """
    import keras

    patched = []
    for name in dir(keras.optimizers):
        cls = getattr(keras.optimizers, name)
        if isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer):
            original = cls.__dict__.get("__init__")
            if original is None:
                continue

            def init(self, *args, _original=original, _name=name, **kwargs):
                if "lr" in kwargs and "learning_rate" not in kwargs:
                    log.warning("model.py: %s(lr=...) is Keras 2; use learning_rate=", _name)
                    kwargs["learning_rate"] = kwargs.pop("lr")
                _original(self, *args, **kwargs)

            cls.__init__ = init
            patched.append((cls, original))
    try:
        yield
    finally:
        for cls, original in patched:
            cls.__init__ = original


def _output_activation(model) -> str:
    last = model.layers[-1] if model.layers else None
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", str(act)) if act is not None else "linear"


def _loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss.lower()
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
    return str(name).lower()


def _target(loss: str, n_classes: int, units: int, activation: str, where: str) -> str:
    """How to encode y for this loss, or a ModelError saying what to change."""
    classes = f"{n_classes} classes"
    if units == 1 and activation == "softmax":
        raise ModelError(
            "the output layer is a single unit with softmax, which always outputs 1.0 and "
            "never learns (MLaaS4HEP's rucio example did this); use Dense(1, "
            f"activation='sigmoid') with binary_crossentropy\n{where}"
        )
    if loss in BINARY_LOSSES:
        if n_classes != 2 or units != 1:
            raise ModelError(
                f"binary_crossentropy needs one sigmoid output and two classes, but the labels "
                f"have {classes} and the model {units} outputs; for multi-class use "
                f"Dense({n_classes}, activation='softmax') with "
                f"sparse_categorical_crossentropy\n{where}"
            )
        return "binary"
    if loss in SPARSE_LOSSES or loss in ONEHOT_LOSSES:
        if units != n_classes:
            raise ModelError(
                f"the model has {units} outputs but the labels have {classes}; use "
                f"Dense({n_classes}, activation='softmax') as the last layer\n{where}"
            )
        return "sparse" if loss in SPARSE_LOSSES else "onehot"
    raise ModelError(
        f"loss {loss!r} does not match a classification of {classes}; use "
        + ("binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy")
        + f"\n{where}"
    )


def model_digest(path: str | Path | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path else None
