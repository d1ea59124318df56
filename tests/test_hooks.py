"""A record preprocessing hook (MLaaS4HEP's ``preprocessing(rec)``) through the data path:
specs records it, merge keeps it in the layout, preprocess runs the layout's copy, and the
MLaaS4HEP Rucio example runs as its own folder gives it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from rootfiles import write_events

from rootml.config import Settings, with_preproc
from rootml.exceptions import ConfigError
from rootml.hooks import hook_document, load_hook
from rootml.merging import merge
from rootml.preprocessing import preprocess
from rootml.rucio_sample import write_rucio_sample
from rootml.specs import file_specs

ROOTML = [sys.executable, "-m", "rootml"]

#: what MLaaS4HEP's Rucio example does: keep some attributes of the payload, turn the two
#: strings it uses into 0/1, drop what it cannot use
HOOK = """
KEEP = ("bytes", "file_size", "tf_created_at", "submitted_at", "started_at")

def preprocessing(rec):
    data = rec["data"]
    if data["event_type"] == "transfer-failed":
        return None
    out = {key: data[key] for key in KEEP}
    out["submitted"] = 1 if data["event_type"] == "transfer-submitted" else 0
    out["activity"] = 1 if data["activity"] == "Staging" else 0
    return out
"""


@pytest.fixture(scope="module")
def rucio(tmp_path_factory):
    d = tmp_path_factory.mktemp("rucio")
    files = write_rucio_sample(d, files=2, records_per_file=1500, seed=3)
    hook = d / "preproc.py"
    hook.write_text(HOOK)
    return files, hook


def _specs(files, hook, **kw):
    doc = hook_document(hook)
    return [
        file_specs(
            str(f), "events", identifiers=(), label_branch="activity", preprocessing=doc, **kw
        )
        for f in files
    ]


def test_specs_take_the_hooks_fields_and_keep_the_hook(rucio):
    files, hook = rucio
    specs = _specs(files, hook)
    fields = {"bytes", "file_size", "tf_created_at", "submitted_at", "started_at", "submitted"}
    assert set(specs[0]["branches"]) == fields | {"activity"}
    saved = specs[0]["preprocessing"]
    assert saved["file"] == "preproc.py"
    assert saved["code"] == HOOK
    # the records the hook drops (failed transfers, about a tenth) are not events
    assert 0.8 * 1500 < specs[0]["entries"] < 0.97 * 1500


def test_preprocess_runs_the_layouts_hook_when_it_reads_the_file(rucio, tmp_path):
    files, hook = rucio
    staged = [tmp_path / f"columns{i}" for i in range(len(files))]
    specs = [
        file_specs(str(f), "events", identifiers=(), label_branch="activity",
                   preprocessing=hook_document(hook), columns=c)
        for f, c in zip(files, staged, strict=True)
    ]  # fmt: skip
    settings = Settings(tree="events", identifiers=(), chunk_size=500)
    layout = merge(specs, settings, labels=None, label_branch="activity")
    assert layout["preprocessing"]["sha256"] == specs[0]["preprocessing"]["sha256"]
    assert "activity" not in layout["features"]
    chunks = range(len(layout["chunks"]))
    from_file = preprocess(layout, chunks, tmp_path / "file")
    from_columns = preprocess(
        layout, chunks, tmp_path / "columns", columns=[str(c) for c in staged]
    )
    for a, b in zip(from_file, from_columns, strict=True):
        with h5py.File(a) as ha, h5py.File(b) as hb:
            np.testing.assert_array_equal(ha["x"][:], hb["x"][:])
            np.testing.assert_array_equal(ha["y"][:], hb["y"][:])
            assert set(np.unique(ha["y"][:])) <= {0, 1}


def test_files_read_with_different_hooks_do_not_merge(rucio, tmp_path):
    files, hook = rucio
    other = tmp_path / "other.py"
    other.write_text(HOOK.replace("transfer-failed", "transfer-queued"))
    specs = [_specs(files[:1], hook)[0], _specs(files[1:], other)[0]]
    with pytest.raises(ConfigError, match="different preprocessing files"):
        merge(specs, Settings(tree="events", identifiers=()), labels=None, label_branch="activity")


def test_a_hook_on_a_root_file_is_refused_naming_both(tmp_path, rucio):
    _, hook = rucio
    root = write_events(tmp_path / "s.root", 100, 1, signal=True)
    with pytest.raises(
        ConfigError, match=r"preproc\.py \(preprocessing\) applies to record inputs"
    ):
        file_specs(str(root), "events", preprocessing=hook_document(hook))


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("def preprocessing(rec)\n    return rec\n", "syntax error at line 1"),
        ("import no_such_module\n", "ModuleNotFoundError"),
        ("def other(rec):\n    return rec\n", "defines no function preprocessing"),
    ],
)
def test_a_broken_hook_file_is_said_before_any_file_is_read(tmp_path, code, message):
    path = tmp_path / "hook.py"
    path.write_text(code)
    with pytest.raises(ConfigError, match=message) as err:
        with_preproc(Settings(), path)
    assert str(path) in str(err.value)


def test_specs_cli_takes_a_python_preproc_and_labels_from_a_field(rucio, tmp_path):
    files, hook = rucio
    out = tmp_path / "specs.json"
    done = subprocess.run(
        [*ROOTML, "specs", str(files[0]), "--preproc", str(hook), "--labels", "branch:activity",
         "--out", str(out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["preprocessing"]["sha256"] == hook_document(hook)["sha256"]
    assert doc["format"] == "json"


def test_input_yml_names_the_hook_relative_to_itself(rucio, tmp_path):
    from rootml.config import load_input

    files, hook = rucio
    (tmp_path / "hook.py").write_text(hook.read_text())
    yml = tmp_path / "input.yml"
    yml.write_text(
        f"files: {json.dumps([str(f) for f in files])}\nlabels: {{branch: activity}}\n"
        "preprocessing: hook.py\n"
    )
    _, settings = load_input(yml)
    assert settings.preprocessing["code"] == HOOK
    yml.write_text(yml.read_text().replace("hook.py", "missing.py"))
    with pytest.raises(ConfigError, match="no preprocessing file"):
        load_input(yml)


@pytest.mark.tensorflow
def test_the_rucio_example_runs_from_its_mlaas4hep_folder(tmp_path):
    """`rootml sample --kind rucio` writes MLaaS4HEP's Rucio example as a folder (JSON lines,
    labels from the `activity` field, preproc.py); `rootml run --mlaas4hep` trains on it."""
    sample = tmp_path / "rucio"
    made = subprocess.run(
        [*ROOTML, "sample", "--kind", "rucio", "--out", str(sample), "--events", "6000"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    folder = sample / "mlaas4hep"
    assert (folder / "preproc.py").is_file()
    assert (folder / "labels.txt").read_text().strip() == "activity"
    workdir = tmp_path / "w"
    done = subprocess.run(
        [*ROOTML, "run", "--mlaas4hep", str(folder), "--engine", "local", "--workdir",
         str(workdir)],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    layout = json.loads((workdir / "merge" / "layout.json").read_text())
    assert layout["preprocessing"]["code"] == (folder / "preproc.py").read_text()
    assert layout["files"][0]["basename"].endswith(".json.gz")
    metrics = json.loads((workdir / "evaluate" / "report" / "metrics.json").read_text())
    assert metrics["auc"] > 0.85  # file size and tape wait tell staging apart
    params = json.loads((workdir / "train" / "bundle" / "params.json").read_text())
    assert "file_size" in json.dumps(params)
    assert Path(workdir / "init" / "preproc.py").read_text() == (folder / "preproc.py").read_text()

    # the same records without the hook (the sample's input.yml): the string fields are
    # one-hot categories, the class is the activity by its name, and the served event (the
    # first record, strings included) is scored
    plain = tmp_path / "plain"
    done = subprocess.run(
        [*ROOTML, "run", "--input", str(sample / "input.yml"), "--engine", "local",
         "--workdir", str(plain)],
        capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    layout = json.loads((plain / "merge" / "layout.json").read_text())
    assert "preprocessing" not in layout
    assert layout["labels"]["classes"][0] == "Analysis Input"
    assert len(layout["labels"]["classes"]) >= 5
    encoded = {c["branch"]: c for c in layout["inputs"] if c["kind"] == "category"}
    assert encoded["data.event_type"]["encoding"] == "onehot"
    assert "transfer-submitted" in encoded["data.event_type"]["values"]
    assert "data.name" not in layout["read"]  # a name per record: not a category
    metrics = json.loads((plain / "evaluate" / "report" / "metrics.json").read_text())
    assert metrics["auc_macro"] > 0.6
    assert "(macro, one class against the rest)" in done.stdout
    assert "served model" in done.stdout


def test_records_only_pythons_json_reads_still_reach_the_hook(tmp_path):
    """orjson parses the records for a hook; a line it refuses (a NaN token, an integer
    beyond 64 bits) is read by Python's json as before, and the hook sees the same values."""
    from rootml.records import open_records

    lines = [
        '{"a": 1.5, "b": 2}',
        '{"a": NaN, "b": 3}',
        '{"a": 2.5, "b": 123456789012345678901234567890}',
    ]
    path = tmp_path / "r.json"
    path.write_text("\n".join(lines * 2) + "\n")
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import math\n"
        "def preprocessing(rec):\n"
        "    return {'a': -1.0 if math.isnan(rec['a']) else rec['a'], 'big': float(rec['b'] > 2**64)}\n"
    )
    with open_records(path, preprocessing=load_hook(hook_document(hook))) as reader:
        arrays = reader.arrays(["a", "big"])
    assert arrays["a"].tolist() == [1.5, -1.0, 2.5] * 2
    assert arrays["big"].tolist() == [0.0, 0.0, 1.0] * 2
