"""The layer table of docs/architecture.md, read from the imports themselves (module level and
inside functions): imports point down, no stage imports another stage, only the reading
layer imports uproot, and nothing on the data path reaches TensorFlow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "rootml"

STAGES = {"specs", "merging", "preprocessing", "fetching", "sample", "training", "scoring"}
MODEL_LAYERS = {"modelfile", "bundle"}
PURE_HELPERS = {
    "config", "schemas", "storage", "exceptions", "sources", "shards", "metrics", "plots", "client",
    "report", "layout", "transform", "multiplicity", "rucio_sample", "expressions", "derivation", "preproc", "reweighting",
    "hooks", "categories",
}  # fmt: skip
READING = {"reading", "columns", "records", "recordfiles", "recordarrays"}
#: the modules the data steps (fetch, specs, merge, preprocess) run
DATA_PATH = {"fetching", "specs", "merging", "preprocessing"}
TENSORFLOW = {"tensorflow", "keras", "tf2onnx", "tf_keras"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names imported anywhere in the file (relative imports resolved); for ``from
    X import a`` both ``X`` and ``X.a`` (``a`` may be a module)."""
    package = (
        _module_name(path).split(".")
        if path.name == "__init__.py"
        else (_module_name(path).split(".")[:-1])
    )
    package = [p for p in package if p]
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(["rootml", *base, *([node.module] if node.module else [])])
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {
    _module_name(p): _imports(p) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts
}


def _internal(module: str) -> set[str]:
    """The rootml modules ``module`` imports, by their name under ``rootml``."""
    names = set()
    for name in GRAPH[module]:
        if name.startswith("rootml."):
            short = name.removeprefix("rootml.")
            while short and short not in GRAPH:
                short = short.rpartition(".")[0]
            if short and short != module:
                names.add(short)
    return names


def _top_level(module: str) -> set[str]:
    return {name.split(".")[0] for name in GRAPH[module]}


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_internal(current))
    return seen


def test_the_table_names_every_module_of_the_package_top_level():
    top = {m for m in GRAPH if "." not in m and m not in {"", "__main__"}}
    listed = STAGES | MODEL_LAYERS | PURE_HELPERS | READING | {"publishing", "tracking", "cli"}
    assert top - listed - {"server", "workflow"} == set()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_imports_another_stage(stage):
    assert _internal(stage) & (STAGES - {stage}) == set()


@pytest.mark.parametrize("module", sorted(MODEL_LAYERS | PURE_HELPERS | READING))
def test_lower_layers_import_no_stage_and_no_cli(module):
    assert _internal(module) & (STAGES | {"cli", "workflow", "server", "publishing"}) == set()


@pytest.mark.parametrize("module", sorted(PURE_HELPERS | READING))
def test_pure_helpers_and_reading_import_no_model_layer(module):
    assert _internal(module) & MODEL_LAYERS == set()


def test_only_the_reading_layer_imports_uproot():
    users = {m for m in GRAPH if "uproot" in _top_level(m)}
    assert users <= {"reading", "sample"}, users


@pytest.mark.parametrize("module", sorted(DATA_PATH))
def test_nothing_on_the_data_path_reaches_tensorflow(module):
    reached = {m: _top_level(m) & TENSORFLOW for m in _closure(module)}
    assert {m: tf for m, tf in reached.items() if tf} == {}


def test_the_layer_reader_sees_real_imports():
    """The checks above are only as good as the reader: it must find imports of each form."""
    assert "training" in _internal("cli.model")  # from ..training import ... in a function
    assert {"bundle", "layout"} <= _internal("server.backends")  # from .. import bundle, layout
    assert "transform" in _internal("preprocessing")  # from .transform import ...
    assert "tensorflow" in _top_level("bundle")  # import inside a function
    assert "uproot" in _top_level("reading")
