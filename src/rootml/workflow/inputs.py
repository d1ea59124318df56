"""A run's input, made self-contained: the ``init/`` folder yadage starts from.

``rootml run`` takes an ``input.yml`` (rootml's form) or an MLaaS4HEP folder (``files.txt``,
``labels.txt``, ``params.json``, ``model.py``) and writes into the run's ``init/`` folder:

- ``input.yml`` with the file list and labels written out (local paths made absolute, URLs and
  LFNs as given) and ``params`` pointing at a copy beside it, so every step, in any engine,
  reads the same settings from one folder that yadage mounts;
- ``model/model.py``, a copy of the user's model, given to the train step as a parameter;
- ``workflow-input.yml``, the workflow's init parameters (``input``, ``files``,
  ``checksums``, ``model``, ``model_sha256``, ``name``, ``tfaas_url``, ``jobs``,
  ``mlflow``), the keys
  ``reana.yaml`` gives too.

The result is validated with the same loader the steps use before anything runs.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from ..config import (
    Inputs,
    Settings,
    load_input,
    load_params,
    parse_file_weights,
    read_list_file,
    read_yaml,
)
from ..exceptions import ConfigError, RootmlError, WorkflowError
from ..modelfile import syntax_message
from ..preproc import load_preproc
from ..sources import LFN_PREFIX, REMOTE_SCHEMES, record_format
from ..storage import read_text

#: what an MLaaS4HEP folder holds (model.py and params.json may be missing)
MLAAS4HEP_FILES = ("files.txt", "labels.txt", "params.json", "model.py")
DEFAULT_NAME = "rootml_model"
#: parameter values meaning "no model file" and "the TFAAS_URL variable": never '', which
#: yadage would turn into the init folder's path
NONE, FROM_ENV = "none", "env"


@dataclass(frozen=True)
class RunInput:
    """The prepared ``init/`` folder of a run."""

    initdir: Path
    input_yml: Path
    init_yml: Path
    params: dict[str, Any]
    inputs: Inputs
    settings: Settings
    #: the run's private copies (path as text) -> the user's file they were made from
    copies: dict[str, str] = field(default_factory=dict)

    def user_paths(self, text: str) -> str:
        """``text`` (a message) with the run's private copies named as the user's files: a
        user who edited the copy would see it overwritten on --resume."""
        return user_paths(text, self.copies)

    @property
    def files(self) -> list[str]:
        return list(self.params["files"])


def is_remote(entry: str) -> bool:
    """A URL uproot reads over the network, or an LFN the redirector turns into one (file://
    and plain paths are local)."""
    return urlparse(entry).scheme in REMOTE_SCHEMES or entry.startswith(LFN_PREFIX)


def _absolute(entries: list[str], base: Path) -> list[str]:
    out = []
    for entry in entries:
        if "://" in entry or is_remote(entry) or Path(entry).is_absolute():
            out.append(entry)
        else:
            out.append(str((base / entry).resolve()))
    return out


def _entries(value: Any, base: Path, key: str, where: Path) -> list:
    """A list given inline, or read from a text file named relative to ``base``."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, str):
        return read_list_file(base / value)
    raise ConfigError(f"'{key}' must be a list or a file name, got {value!r}\nin file {where}")


def load_yaml(path: Path) -> dict:
    doc = read_yaml(path)
    if not isinstance(doc, dict):
        raise ConfigError(f"{path} must be a YAML mapping (see inputs/input.yml)")
    return doc


def from_input_yml(path: str | Path) -> tuple[dict, Path]:
    """(document, folder its relative names refer to) of a rootml ``input.yml``."""
    path = Path(path).resolve()
    load_input(path)  # the schema, labels and settings, checked before anything is copied
    return load_yaml(path), path.parent


def from_mlaas4hep(folder: str | Path) -> tuple[dict, Path]:
    """The ``input.yml`` document equivalent to an MLaaS4HEP folder, read unchanged."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"{folder} is not a folder; --mlaas4hep takes the folder that holds "
            "files.txt, labels.txt, params.json and model.py"
        )
    missing = [n for n in ("files.txt", "labels.txt") if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"{folder} has no {' and no '.join(missing)}; an MLaaS4HEP folder needs files.txt "
            "(one ROOT file per line) and labels.txt (one label per file)"
        )
    doc: dict[str, Any] = {"files": "files.txt", "labels": "labels.txt"}
    if (folder / "params.json").is_file():
        doc["params"] = "params.json"
    if (folder / "model.py").is_file():
        doc["model"] = "model.py"
    if (folder / "weights.txt").is_file():  # rootml's: one normalisation per file
        doc["weights"] = "weights.txt"
    if (folder / "preproc.py").is_file():  # MLaaS4HEP's --preproc: preprocessing(rec)
        doc["preprocessing"] = "preproc.py"
    if (folder / "preproc.json").is_file():  # MLaaS4HEP's cuts and new branches
        derived, exclude = load_preproc(folder / "preproc.json")
        doc.update(derived)
        if exclude:  # input.yml's exclude replaces params.json's: give both
            listed = (
                load_params(folder / "params.json").get("exclude", ()) if "params" in doc else ()
            )
            doc["features"] = {"exclude": list(dict.fromkeys([*listed, *exclude]))}
    return doc, folder


def _write_if_changed(path: Path, data: bytes, *, frozen: bool) -> bool:
    """Write ``data`` unless ``path`` already holds it; ``frozen`` (a resumed run) makes a
    change an error. Untouched files keep yadage's step cache valid: it hashes ``init/``."""
    if path.is_file() and path.read_bytes() == data:
        return False
    if frozen:
        raise WorkflowError(
            f"--resume: {path.name} differs from the one the run in {path.parent.parent} "
            "started with; the data settings of a run cannot change (only model.py may): "
            "start a new run with another --workdir"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return True


def prepare(
    doc: dict,
    base: Path,
    workdir: Path,
    *,
    name: str | None = None,
    tfaas_url: str | None = None,
    jobs: int = 4,
    where: Path | None = None,
    resume: bool = False,
    checksums: list[str] | None = None,
    mlflow: str | None = None,
) -> RunInput:
    """Write the run's ``init/`` folder (and ``model/``) for ``doc``, an ``input.yml`` document
    whose relative names refer to ``base``, and return it, validated.

    ``model.py`` goes to ``model/``, outside ``init/``, with its sha256 as a parameter of the
    train step only: a fixed model resumes with training, not with the whole data path.
    """
    where = where or base
    doc = dict(doc)
    files = _absolute([str(f) for f in _entries(doc["files"], base, "files", where)], base)
    if not files:
        listed = base / doc["files"] if isinstance(doc["files"], str) else where
        raise ConfigError(
            f"the file list is empty: list at least one ROOT file (path, URL or LFN)\n"
            f"in file {listed}"
        )
    listed = base / doc["files"] if isinstance(doc["files"], str) else where
    _check_local_files(files, listed, doc.get("format"))
    labels = doc["labels"]
    if not isinstance(labels, dict):
        labels = _entries(labels, base, "labels", where)
    sources = {}
    for key in ("model", "params", "preprocessing"):
        if doc.get(key):
            sources[key] = base / doc.pop(key)
            if not sources[key].is_file():
                raise ConfigError(
                    f"{key} file {sources[key]} does not exist; fix '{key}' (relative to the "
                    f"input's folder)\nin {where}"
                )
    if "model" in sources:
        _check_syntax(sources["model"])
    initdir, modeldir = workdir / "init", workdir / "model"
    if "params" in sources:
        doc["params"] = "params.json"
        _write_if_changed(initdir / "params.json", sources["params"].read_bytes(), frozen=resume)
    if "preprocessing" in sources:  # under its own name: messages and the layout say it
        hook = sources["preprocessing"]
        doc["preprocessing"] = hook.name
        _write_if_changed(initdir / hook.name, hook.read_bytes(), frozen=resume)
    doc["files"], doc["labels"] = files, labels
    if isinstance(doc.get("weights"), str):  # init/ holds no weights.txt: inline the numbers
        listed = _entries(doc["weights"], base, "weights", where)
        doc["weights"] = list(parse_file_weights(listed, str(base / doc["weights"])))
    input_yml = initdir / "input.yml"
    text = f"# written by rootml run from {where}\n" + yaml.safe_dump(doc, sort_keys=False)
    _write_if_changed(input_yml, text.encode(), frozen=resume)
    copies = {str(input_yml): str(where)}
    copies.update(
        {str(initdir / "params.json"): str(sources["params"])} if "params" in sources else {}
    )
    copies.update({str(modeldir / "model.py"): str(sources["model"])} if "model" in sources else {})
    if "preprocessing" in sources:
        copies[str(initdir / sources["preprocessing"].name)] = str(sources["preprocessing"])
    try:
        inputs, settings = load_input(input_yml)
    except RootmlError as err:
        raise type(err)(user_paths(str(err), copies)) from None
    model, model_sha256 = NONE, NONE
    if "model" in sources:
        data = sources["model"].read_bytes()
        model, model_sha256 = str(modeldir / "model.py"), hashlib.sha256(data).hexdigest()
        _write_if_changed(Path(model), data, frozen=False)
    publish = doc.get("publish") or {}
    params = {
        "input": str(input_yml),
        "files": files,
        "checksums": list(checksums) if checksums else [NONE] * len(files),
        "model": model,
        "model_sha256": model_sha256,
        "name": name or publish.get("name") or DEFAULT_NAME,
        "tfaas_url": tfaas_url or FROM_ENV,
        "jobs": jobs,
        "mlflow": mlflow or NONE,
    }
    init_yml = workdir / "workflow-input.yml"
    init_yml.write_text(yaml.safe_dump(params, sort_keys=False), "utf-8")
    return RunInput(initdir, input_yml, init_yml, params, inputs, settings, copies)


ROOT_MAGIC = b"root"


def _check_local_files(files: list[str], listed: Path, file_format: str | None = None) -> None:
    """Local input files exist, are files and are ROOT files: said in the first second, not by
    the fetch step later (remote files are checked when they are fetched)."""
    for name in files:
        if "://" in name and not name.startswith("file://"):
            continue
        if is_remote(name):
            continue
        path = Path(urlparse(name).path if name.startswith("file://") else name)
        if path.is_dir():
            raise ConfigError(
                f"input file {path} is a folder: list the ROOT files in it, one per line\n"
                f"in {listed}"
            )
        try:
            with open(path, "rb") as handle:
                head = handle.read(4)
        except FileNotFoundError:
            raise ConfigError(
                f"input file {path} does not exist: fix the name, or restore the file\nin {listed}"
            ) from None
        except OSError as err:
            raise ConfigError(
                f"cannot read input file {path}: {err.strerror}\nin {listed}"
            ) from None
        if head != ROOT_MAGIC and not record_format(path.name, file_format):
            raise ConfigError(
                f"input file {path} is not a ROOT file (it starts with {head!r}, not b'root'): "
                "list ROOT files, or record files named by their format (.json, .jsonl, "
                ".csv, .parquet, .avro) or whose format input.yml's 'format' says\n"
                f"in {listed}"
            )


def _check_syntax(path: Path) -> None:
    """model.py compiles and defines ``model`` taking the input width and returning a value:
    said now, not by training after preprocessing (what needs TensorFlow to find, an import
    that raises or a model that is not compiled, the workflow's model_probe step says while
    the files are read and model_check, for the input width, once merge is done)."""
    try:
        tree = compile(read_text(path, "model"), str(path), "exec", flags=ast.PyCF_ONLY_AST)
    except SyntaxError as err:
        raise ConfigError(syntax_message(err, path)) from None
    bound = {}  # top-level name -> the statement that binds it last
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound[node.name] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update({t.id: node for t in targets if isinstance(t, ast.Name)})
    if "model" not in bound and not any(
        isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in tree.body
    ):
        found = sorted(k for k, v in bound.items() if isinstance(v, ast.FunctionDef))
        raise ConfigError(
            "the model file must define a function model(idim) returning a compiled Keras "
            f"model (as MLaaS4HEP calls it); found: {', '.join(found) or 'no functions'}\n"
            f"in file {path}"
        )
    node = bound.get("model")
    if isinstance(node, ast.FunctionDef):
        args = node.args
        positional = [*args.posonlyargs, *args.args]
        required_kw = [
            a for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d is None
        ]
        if (
            (not positional and args.vararg is None)
            or required_kw
            or (len(positional) - len(args.defaults) > 1)
        ):
            raise ConfigError(
                f"model{ast.unparse(args).join('()')} at line {node.lineno} must take the "
                "input width as its one argument, model(idim): rootml (like MLaaS4HEP) calls "
                f"model(number_of_features)\nin file {path}"
            )
        if not _returns_value(node):
            raise ConfigError(
                f"model(idim) at line {node.lineno} returns nothing (None): end it with "
                f"'return model', the compiled Keras model it builds\nin file {path}"
            )


def _returns_value(fn: ast.FunctionDef) -> bool:
    """``fn`` has a ``return <value>`` of its own (nested functions' returns do not count), or
    raises or yields (then what it does is for the import check to find)."""
    todo = list(fn.body)
    while todo:
        node = todo.pop()
        value = node.value if isinstance(node, ast.Return) else None
        if value is not None and not (isinstance(value, ast.Constant) and value.value is None):
            return True
        if isinstance(node, (ast.Raise, ast.Yield, ast.YieldFrom)):
            return True
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))
    return False


def user_paths(text: str, copies: dict[str, str]) -> str:
    """``text`` with each private copy's path replaced by the user's file's."""
    for copy, original in sorted(copies.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(copy, original)
    return text
