"""Settings: MLaaS4HEP's ``files.txt``/``labels.txt``/``params.json`` and rootml's ``input.yml``.

Both forms end up as one frozen :class:`Settings`. Every MLaaS4HEP key is either honoured or
rejected with a message naming it; nothing is silently ignored (MLaaS4HEP read ``split`` and
``nan`` and then ignored them, and iterated a comma string of branches per character).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .exceptions import ConfigError, closest, format_closest
from .schemas import validate
from .sources import FORMATS
from .storage import decode_text, read_bytes, read_text

log = logging.getLogger(__name__)

#: how a string field becomes features (rootml.categories)
ENCODINGS = ("auto", "onehot", "index")

DEFAULT_IDENTIFIERS = ("run", "event", "luminosityBlock")


@dataclass(frozen=True)
class Settings:
    """Everything that decides how ROOT files become feature rows and a trained model."""

    tree: str = "Events"
    identifiers: tuple[str, ...] = DEFAULT_IDENTIFIERS
    selected: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    redirector: str | None = None
    nevts: int = -1
    chunk_size: int | str = "auto"  # events per shard; "auto": rootml.merging.auto_chunk
    val_fraction: float = 0.16
    test_fraction: float = 0.2
    scaling: str = "quantile"  # merging.QUANTILE_RANGE to [0, 1]; "minmax"; "standard"
    jagged_cap: int | str = "auto"  # merging.auto_cap
    jagged_caps: Mapping[str, int | str] = field(default_factory=dict)
    counts: bool | str = "auto"  # True, False, or "auto": where no counter branch is a feature
    masks: bool = False
    nan_policy: str = "error"
    empty_branches: str = "drop"  # branches with no finite value in any file: drop or error
    #: string fields (rootml.categories): auto, onehot or index for all; per field in
    #: ``categories`` (a field's name -> its encoding)
    categorical: str = "auto"
    categories: Mapping[str, str] = field(default_factory=dict)
    pad_value: float | None = None
    clip: float = 10.0
    seed: int = 42
    epochs: int = 10
    batch_size: int = 256
    shuffle: bool = True
    class_weight: str = "auto"  # rootml.training.TrainOptions.class_weight
    verbose: int = 0
    hist: str | None = None
    model: str | None = None
    #: input.yml's selection, object_selection and new_variables (rootml.derivation)
    derived: Mapping[str, Any] = field(default_factory=dict)
    #: a record preprocessing hook's document (rootml.hooks): input.yml's ``preprocessing``
    preprocessing: Mapping[str, str] | None = None
    #: the input files' format when their names do not say it (rootml.sources.FORMATS)
    file_format: str | None = None

    def __post_init__(self) -> None:
        check_fractions(self.val_fraction, self.test_fraction)
        if self.chunk_size != "auto" and (
            not isinstance(self.chunk_size, int) or self.chunk_size == 0 or self.chunk_size < -1
        ):
            raise ConfigError(
                f"chunk_size must be a positive number of events, -1 (whole file) or auto, "
                f"got {self.chunk_size!r}"
            )
        if self.file_format is not None and self.file_format not in FORMATS:
            raise ConfigError(
                f"format {self.file_format!r} is unknown; use one of {', '.join(FORMATS)} (or "
                "leave it out: the file names say it)"
            )
        if self.nevts < -1 or self.nevts == 0:
            raise ConfigError(f"nevts must be -1 (all events) or positive, got {self.nevts}")
        if self.empty_branches not in ("drop", "error"):
            raise ConfigError(
                f"empty_branches must be 'drop' (merge drops branches with no finite value in "
                f"any file, with one warning) or 'error', got {self.empty_branches!r}"
            )
        for name, choice in {"": self.categorical, **self.categories}.items():
            if choice not in ENCODINGS:
                raise ConfigError(
                    f"the encoding of string field{f' {name!r}' if name else 's'} must be one "
                    f"of {', '.join(ENCODINGS)} (features.categorical / features.categories), "
                    f"got {choice!r}"
                )
        if self.counts not in (True, False, "auto"):
            raise ConfigError(
                f"counts must be true, false or 'auto' (a count feature for each collection "
                f"whose counter branch, e.g. nJet, is not a feature), got {self.counts!r}"
            )
        if self.pad_value is not None and not math.isfinite(self.pad_value):
            raise ConfigError(
                f"the padding value (params.json 'nan' / features.pad_value) must be a finite "
                f"number outside the scaled range, got {self.pad_value}; MLaaS4HEP's NaN "
                "padding later became 0 and collided with real minima: leave it unset"
            )


def expand_names(
    patterns: Sequence[str], names: Sequence[str], *, strict: bool = True
) -> list[str]:
    """The branch names ``patterns`` stand for, in the patterns' order: a name as it is, a
    split object's leaf also as ``Jet_PT`` for ``Jet.PT``, and shell patterns (``Jet.*``,
    ``Muon_*``, ``*_eta``; "." and "_" match each other). A pattern that matches nothing is an
    error when ``strict`` (selections), else dropped (exclusions may name absent branches);
    an unknown plain name is kept, so that reading it gives the "closest" message."""
    known = list(names)
    loose = {n: n.replace(".", "_") for n in known}
    out: list[str] = []
    for pattern in patterns:
        if pattern in loose:
            out.append(pattern)
            continue
        wanted = pattern.replace(".", "_")
        if not any(ch in pattern for ch in "*?["):
            aliases = [n for n in known if loose[n] == wanted]
            out.extend(aliases[:1] if len(aliases) == 1 else [pattern] if strict else [])
            continue
        hits = [n for n in known if fnmatch.fnmatchcase(loose[n], wanted)]
        if not hits and strict:
            raise ConfigError(
                f"the branch pattern {pattern!r} matches no branch "
                f"({format_closest(pattern.strip('*?[]'), known)})"
            )
        out.extend(hits)
    return list(dict.fromkeys(out))


def check_fractions(val: float, test: float) -> None:
    if not (0 <= val < 1 and 0 < test < 1 and val + test < 1):
        raise ConfigError(
            f"split fractions must leave events for training: val={val}, test={test} "
            "(need 0 <= val, 0 < test, val + test < 1)"
        )


# ---------------------------------------------------------------- MLaaS4HEP params.json


def _names(value: Any, key: str) -> tuple[str, ...]:
    """A branch list given as a JSON list or as one comma-separated string."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value if v.strip())
    raise ConfigError(
        f"params.json key {key!r} must be a list of branch names or a comma-separated "
        f"string, got {value!r}"
    )


def _exclude(value: Any, base: Path) -> tuple[str, ...]:
    """MLaaS4HEP also allowed ``exclude_branches`` to name a file with one branch per line."""
    if isinstance(value, str) and "," not in value:
        candidate = Path(value) if Path(value).is_absolute() else base / value
        if candidate.is_file():
            return tuple(read_list_file(candidate))
    return _names(value, "exclude_branches")


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"params.json key {key!r} must be an integer, got {value!r}")
    return value


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ConfigError(f"params.json key {key!r} must be true or false, got {value!r}")


def _split(value: Any) -> dict[str, float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"params.json key 'split' must be a fraction, got {value!r}")
    # MLaaS4HEP read 'split' and then hard-coded 0.2/0.2; rootml honours it as the test
    # fraction and keeps MLaaS4HEP's validation share (20% of the rest).
    return {"test_fraction": float(value), "val_fraction": round(0.2 * (1 - value), 6)}


def _pad(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str) and value.lower() == "nan":
        value = math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"params.json key 'nan' must be a number, got {value!r}")
    return float(value)


def _hist(value: Any) -> str | None:
    if value in (None, "", "pdfs"):
        return value or None
    raise ConfigError(
        f"params.json key 'hist' must be \"pdfs\" (per-feature distributions in the evaluation "
        f"report), got {value!r}"
    )


# key → (Settings field, converter). Training keys are carried to the training stage.
PARAMS_KEYS: dict[str, Any] = {
    "nevts": lambda v, b: {"nevts": _int(v, "nevts")},
    "chunk_size": lambda v, b: {"chunk_size": _int(v, "chunk_size")},
    "epochs": lambda v, b: {"epochs": _int(v, "epochs")},
    "batch_size": lambda v, b: {"batch_size": _int(v, "batch_size")},
    "shuffle": lambda v, b: {"shuffle": _bool(v, "shuffle")},
    "branch": lambda v, b: {"tree": _tree(v)},
    "identifier": lambda v, b: {"identifiers": _names(v, "identifier")},
    "selected_branches": lambda v, b: {"selected": _names(v, "selected_branches")},
    "exclude_branches": lambda v, b: {"exclude": _exclude(v, b)},
    "redirector": lambda v, b: {"redirector": v or None},
    "verbose": lambda v, b: {"verbose": _int(int(v) if isinstance(v, bool) else v, "verbose")},
    "split": lambda v, b: _split(v),
    "nan": lambda v, b: {"pad_value": _pad(v)},
    "hist": lambda v, b: {"hist": _hist(v)},
    "seed": lambda v, b: {"seed": _int(v, "seed")},
}


def _tree(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"params.json key 'branch' (the tree name) must be a string, got {value!r}"
        )
    return value


def params_overrides(params: Mapping[str, Any], base: Path, where: str) -> dict[str, Any]:
    """Translate an MLaaS4HEP ``params.json`` dict into :class:`Settings` field values."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        convert = PARAMS_KEYS.get(key)
        if convert is None:
            hint = ", ".join(repr(c) for c in closest(key, PARAMS_KEYS, 3))
            raise ConfigError(
                f"unknown params.json key {key!r} (closest known: {hint});\n"
                f"remove it or fix its spelling; known keys: {', '.join(PARAMS_KEYS)}\n"
                f"in file {where}"
            )
        try:
            out.update(convert(value, base))
        except ConfigError as err:
            raise ConfigError(f"{err}\nin file {where}") from None
    return out


def load_params(path: str | Path) -> dict[str, Any]:
    """Read an MLaaS4HEP ``params.json`` into Settings field values."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise ConfigError(
            f"params.json must hold a JSON object, got {type(data).__name__}\nin file {path}"
        )
    return params_overrides(data, path.parent, str(path))


def _read_json(path: Path) -> Any:
    text = read_text(path, "params.json")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"not valid JSON: {err}\nin file {path}") from None


# ---------------------------------------------------------------- files.txt, labels.txt


def read_list_file(path: str | Path) -> list[str]:
    """Lines of a list file, without blank lines and ``#`` comments."""
    path = Path(path)
    raw = read_bytes(path, "list")
    if raw[:4] == b"root" or b"\0" in raw[:1024]:
        raise ConfigError(
            f"{path} is a binary (ROOT?) file, not a text list; pass ROOT files in a "
            "files.txt with one path per line, or list them in input.yml"
        )
    lines = [ln.split("#", 1)[0].strip() for ln in decode_text(raw, path).splitlines()]
    return [ln for ln in lines if ln]


def list_arg(value: str | Sequence[str]) -> list[str]:
    """A list given as a list, a list file, or a comma-separated string."""
    if not isinstance(value, str):
        return [str(v) for v in value]
    if "," not in value and Path(value).is_file():
        return read_list_file(value)
    return [v.strip() for v in value.split(",") if v.strip()]


@dataclass(frozen=True)
class Inputs:
    """The input files (as written by the user), their labels, and where to look them up."""

    files: tuple[str, ...]
    labels: tuple[str, ...] | None  # one per file, or None when taken from a branch
    label_branch: str | None
    search_dirs: tuple[str, ...] = ()
    #: one normalisation per file (cross-section x luminosity / generated events), or None
    weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError("the file list is empty; give at least one ROOT file")
        if self.labels is not None and len(self.labels) != len(self.files):
            raise ConfigError(
                f"{len(self.labels)} labels for {len(self.files)} files; labels.txt needs one "
                "label per line of files.txt (or a single branch name to take labels from)"
            )
        if self.weights is not None:
            check_file_weights(self.weights, len(self.files))
        check_unique_basenames(self.files)


def check_file_weights(weights: Sequence[float], n_files: int) -> None:
    """One finite weight per file, not all zero (negative ones are allowed)."""
    if len(weights) != n_files:
        raise ConfigError(
            f"{len(weights)} file weights for {n_files} files; weights.txt (or input.yml's "
            "weights) needs one number per line of files.txt"
        )
    bad = [i for i, w in enumerate(weights) if not math.isfinite(w)]
    if bad:
        raise ConfigError(f"file weight {bad[0] + 1} is {weights[bad[0]]}; weights must be finite")
    if not any(weights):
        raise ConfigError("every file weight is 0: no event would count; fix weights.txt")


def parse_file_weights(values: Sequence[Any], where: str) -> tuple[float, ...]:
    """File weights from numbers, or from ``{xsec, nevents_generated}`` (cross-section over
    generated events; a common luminosity does not change what is learned)."""
    out = []
    for i, v in enumerate(values):
        if isinstance(v, Mapping):
            unknown = set(v) - {"xsec", "nevents_generated"}
            if unknown or not {"xsec", "nevents_generated"} <= set(v):
                raise ConfigError(
                    f"weight {i + 1} must be a number or {{xsec, nevents_generated}}, got {dict(v)}"
                    f"\nin {where}"
                )
            xsec, generated = (
                _number(v["xsec"], i, where),
                _number(v["nevents_generated"], i, where),
            )
            if not generated > 0:
                raise ConfigError(f"weight {i + 1}: nevents_generated must be positive\nin {where}")
            out.append(xsec / generated)
            continue
        out.append(_number(v, i, where))
    return tuple(out)


def _number(value: Any, i: int, where: str) -> float:
    """A number, or its text (YAML 1.1 reads ``2e-3`` as a string)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"weight {i + 1} is {value!r}, not a number; weights.txt holds one number per file"
            f"\nin {where}"
        ) from None


def file_basename(entry: str) -> str:
    """The file name of an input as listed (a path, URL or LFN): what specs and splits key on."""
    return entry.rstrip("/").rsplit("/", 1)[-1]


def check_unique_basenames(files: Sequence[str]) -> None:
    """Two inputs with one basename would overwrite each other's specs and share a split."""
    seen: dict[str, str] = {}
    for f in files:
        base = file_basename(f)
        if base in seen:
            raise ConfigError(
                f"two inputs have the same file name {base!r}: {seen[base]!r} and {f!r};\n"
                "rename one (rootml keys specs and the train/test split by file name)"
            )
        seen[base] = f


def parse_labels(values: Sequence[str], n_files: int) -> tuple[tuple[str, ...] | None, str | None]:
    """One label per file, or a single non-numeric entry naming the label branch."""
    values = [str(v).strip() for v in values]
    if values and values[0].startswith("branch:"):
        return None, values[0].split(":", 1)[1].strip()
    if len(values) == 1 and n_files != 1 and not _is_number(values[0]):
        return None, values[0]
    return tuple(values), None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------- input.yml


def read_yaml(path: Path) -> Any:
    """The parsed YAML document in ``path``; a missing file or bad YAML is a ConfigError."""
    text = read_text(path, "YAML")
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}\nin file {path}") from None


def load_input(path: str | Path) -> tuple[Inputs, Settings]:
    """Read and validate ``input.yml`` (and the MLaaS4HEP files it points at)."""
    path = Path(path)
    doc = read_yaml(path)
    validate(doc, "input", where=f"file {path}")
    base = path.parent
    fields: dict[str, Any] = {}
    if "params" in doc:
        fields.update(load_params(base / doc["params"]))
    data, feats, train = doc.get("data", {}), doc.get("features", {}), doc.get("training", {})
    simple = {
        "tree": doc.get("tree"),
        "file_format": doc.get("format"),
        "seed": doc.get("seed"),
        "verbose": doc.get("verbose"),
        "nevts": data.get("nevts"),
        "chunk_size": data.get("chunk_size"),
        "redirector": data.get("redirector"),
        "val_fraction": data.get("split", {}).get("val"),
        "test_fraction": data.get("split", {}).get("test"),
        "identifiers": _tuple(feats.get("identifiers")),
        "selected": _tuple(feats.get("selected")),
        "exclude": _tuple(feats.get("exclude")),
        "scaling": feats.get("scaling"),
        "jagged_cap": feats.get("jagged_cap"),
        "jagged_caps": feats.get("jagged_caps"),
        "counts": feats.get("counts"),
        "masks": feats.get("masks"),
        "nan_policy": feats.get("nan_policy"),
        "empty_branches": feats.get("empty_branches"),
        "categorical": feats.get("categorical"),
        "categories": feats.get("categories"),
        "pad_value": feats.get("pad_value"),
        "clip": feats.get("clip"),
        "epochs": train.get("epochs"),
        "batch_size": train.get("batch_size"),
        "shuffle": train.get("shuffle"),
        "class_weight": train.get("class_weight"),
    }
    fields.update({k: v for k, v in simple.items() if v is not None})
    if doc.get("model"):
        fields["model"] = str((base / doc["model"]).resolve())
    derived = {
        k: doc[k]
        for k in ("selection", "object_selection", "new_variables", "weight", "reweight")
        if doc.get(k)
    }
    if "reweight" in derived:
        from .reweighting import check_config

        derived["reweight"] = {**derived["reweight"], "bins": _edges(derived["reweight"]["bins"])}
        try:
            check_config(derived["reweight"])
        except ConfigError as err:
            raise ConfigError(f"{err}\nin file {path}") from None
    if derived:
        fields["derived"] = derived
    if doc.get("preprocessing"):
        from .hooks import hook_document

        fields["preprocessing"] = hook_document(base / doc["preprocessing"])
    try:
        settings = Settings(**fields)
    except ConfigError as err:
        raise ConfigError(f"{err}\nin file {path}") from None
    files = _entries(doc["files"], base)
    labels_doc = doc["labels"]
    if isinstance(labels_doc, dict):
        # {field: NAME} says the same of a record file's field
        labels, label_branch = None, labels_doc.get("branch", labels_doc.get("field"))
    else:
        labels, label_branch = parse_labels(_entries(labels_doc, base), len(files))
    weights = None
    if doc.get("weights") is not None:
        listed = (
            _entries(doc["weights"], base) if isinstance(doc["weights"], str) else doc["weights"]
        )
        weights = parse_file_weights(listed, str(path))
    try:
        inputs = Inputs(tuple(files), labels, label_branch, (str(base.resolve()),), weights=weights)
    except ConfigError as err:
        raise ConfigError(f"{err}\nin file {path}") from None
    return inputs, settings


def _edges(bins: Any) -> Any:
    """Bin edges as numbers (YAML 1.1 reads 1e9 as text)."""
    try:
        return [[float(e) for e in edges] for edges in bins]
    except (TypeError, ValueError):
        return bins  # check_config names it


def _tuple(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _entries(value: str | list, base: Path) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return read_list_file(base / value)


def load_mlaas4hep(
    files: str | Sequence[str],
    labels: str | Sequence[str],
    params: str | Path | None = None,
    weights: str | Sequence[str] | None = None,
) -> tuple[Inputs, Settings]:
    """Read MLaaS4HEP's ``files.txt``, ``labels.txt`` and ``params.json`` unchanged (and
    rootml's ``weights.txt``, one normalisation per file, when given)."""
    file_list = list_arg(files)
    search = (
        [str(Path(files).parent.resolve())]
        if isinstance(files, str) and Path(files).is_file()
        else []
    )
    label_values, label_branch = parse_labels(list_arg(labels), len(file_list))
    fields = load_params(params) if params else {}
    file_weights = parse_file_weights(list_arg(weights), str(weights)) if weights else None
    inputs = Inputs(
        tuple(file_list), label_values, label_branch, tuple(search), weights=file_weights
    )
    return inputs, Settings(**fields)


def with_preproc(settings: Settings, path: str | Path) -> Settings:
    """``settings`` with MLaaS4HEP's ``preproc.json`` (:mod:`rootml.preproc`): its cuts and new
    branches as the derivation, its removed branches excluded from the features; or, for a
    ``.py`` file, its record preprocessing hook (:mod:`rootml.hooks`, MLaaS4HEP's
    ``--preproc FILE.py``)."""
    from .preproc import load_preproc

    if str(path).endswith(".py"):
        from .hooks import hook_document

        return replace(settings, preprocessing=hook_document(path))

    if settings.derived:
        raise ConfigError(
            f"both input.yml and {path} declare selections or new variables; keep one of them"
        )
    derived, exclude = load_preproc(path)
    return replace(settings, derived=derived, exclude=(*settings.exclude, *exclude))


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    """``settings`` with the non-None ``changes`` applied (command-line flags)."""
    return replace(settings, **{k: v for k, v in changes.items() if v is not None})
