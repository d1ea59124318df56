"""reana.yaml: valid for REANA offline, consistent with the workflow it runs, and runnable.

- ``reana-client validate`` (0.9.6, its own venv from ``scripts/reana-venv.sh``) accepts the
  repository's spec without an unused-parameter warning, and rejects broken copies of it;
- every ``inputs.parameters`` key is an init output the workflow reads, and the reverse; the
  relative paths among them exist under the workspace root (REANA's default initdir);
- every ``outputs`` path is a folder or file that a single-step stage writes;
- the Gherkin files in ``tests.files`` use only step phrases REANA's test runner knows;
- a REANA-like run (the spec's parameters, the workspace as yadage's work folder, top level and
  initdir, local steps) writes every listed output.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rootml.server import EmbeddedServer, ServerConfig

ROOT = Path(__file__).resolve().parents[1]
REANA_YAML = ROOT / "reana.yaml"
WORKFLOW = ROOT / "workflows" / "main.yml"
STEPS = ROOT / "steps" / "steps.yml"
VENV = ROOT / ".venv-reana"

# The Gherkin steps of REANA's test runner (`reana-client test`, reana-client 0.95+), as
# reana-commons' gherkin_parser/functions.py defines them: (step type, pattern). A `{name}`
# matches any text; the runner strips surrounding double quotes from most arguments.
REANA_STEPS = (
    ("When", "the workflow execution completes"),
    ("When", "the workflow is {status}"),
    ("When", "the workflow status is {status}"),
    ("Then", "the workflow should be {status}"),
    ("Then", "the workflow status should be {status}"),
    ("Then", "the outputs should be included in the workspace"),
    ("Then", "all the outputs should be included in the workspace"),
    ("Then", 'the workspace should include "{path}"'),
    ("Then", 'the workspace should contain "{path}"'),
    ("Then", "{path} should be in the workspace"),
    ("Then", "the workspace should not include {path}"),
    ("Then", "the workspace should not contain {path}"),
    ("Then", "{path} should not be in the workspace"),
    ("Then", 'the logs should contain "{content}"'),
    ("Then", 'the engine logs should contain "{content}"'),
    ("Then", 'the job logs should contain "{content}"'),
    ("Then", 'the job logs for the step {step} should contain "{content}"'),
    ("Then", 'the job logs for the {step} step should contain "{content}"'),
    ("Then", 'the file {path} should include "{content}"'),
    ("Then", 'the file {path} should contain "{content}"'),
    ("Then", "the {algorithm} checksum of the file {path} should be {checksum}"),
    ("Then", "the workflow run duration should be less than {minutes} minutes"),
    ("Then", "the duration of the step {step} should be less than {minutes} minutes"),
    ("Then", "the size of the file {path} should be exactly {size}"),
    ("Then", "the size of the file {path} should be between {low} and {high}"),
    ("Then", "the workspace size should be less than {size}"),
    ("Then", "the workspace size should be more than {size}"),
)
GHERKIN_LINE = re.compile(r"^\s*(?:$|#|(Feature|Scenario):\s*\S|(Given|When|Then|And|But)\s+\S)")


def _pattern(text: str) -> re.Pattern:
    parts = re.split(r"\{(\w+)\}", text)
    regex = "".join(
        f"(?P<{part}>.+?)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(regex)


STEP_PATTERNS = [(kind, _pattern(text)) for kind, text in REANA_STEPS]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text("utf-8"))


@pytest.fixture(scope="module")
def spec() -> dict:
    return _load(REANA_YAML)


@pytest.fixture(scope="module")
def stages() -> dict[str, dict]:
    return {stage["name"]: stage for stage in _load(WORKFLOW)["stages"]}


@pytest.fixture(scope="module")
def steps() -> dict:
    return _load(STEPS)


def _init_outputs(stages: dict[str, dict]) -> dict[str, str]:
    """{init output: stage parameter key} for every `{step: init, output: ...}` selector."""
    found = {}
    for stage in stages.values():
        for par in stage["scheduler"]["parameters"]:
            value = par["value"]
            if isinstance(value, dict) and value.get("step", value.get("stages")) == "init":
                found[value["output"]] = par["key"]
    return found


def _step_name(stage: dict) -> str:
    ref = stage["scheduler"]["step"]["$ref"]
    assert ref.startswith("steps/steps.yml#/"), ref
    return ref.rsplit("/", 1)[-1]


# ------------------------------------------------------------------ reana-client validate


@pytest.fixture(scope="module")
def reana_client() -> Path:
    """reana-client 0.9.6 from scripts/reana-venv.sh: .venv-reana (or $REANA_VENV), installed on
    first use (about 2 minutes with a cold pip cache, under 1 with a warm one)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "reana-venv.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    venv = proc.stdout.strip().splitlines()[-1:] or [str(VENV)]
    client = Path(venv[0]) / "bin" / "reana-client"
    if not client.is_file():
        pytest.skip(
            f"reana-client 0.9.6 is not installed in {venv[0]} and scripts/reana-venv.sh "
            f"could not install it (no PyPI?):\n{proc.stderr.strip()[-1500:]}"
        )
    return client


def validate(folder: Path, client: Path) -> tuple[int, str]:
    """`reana-client validate` run from ``folder`` (it must hold reana.yaml), with no server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
    env["PYTHONWARNINGS"] = "ignore"  # pkg_resources' deprecation, from reana-commons
    proc = subprocess.run(
        [str(client), "validate"],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_reana_client_validates_the_spec(reana_client):
    rc, out = validate(ROOT, reana_client)
    assert rc == 0, out
    assert "Valid REANA specification file" in out, out
    assert "REANA specification parameters appear valid" in out, out
    assert "does not seem to be used" not in out, out
    assert "Workflow operations appear valid" in out, out


def _copy_spec(dest: Path) -> Path:
    shutil.copy2(REANA_YAML, dest / "reana.yaml")
    for name in ("workflows", "steps", "inputs"):
        shutil.copytree(ROOT / name, dest / name)
    return dest


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert old in text, f"{old!r} is no longer in {path}: update this test"
    path.write_text(text.replace(old, new, 1), "utf-8")


@pytest.mark.parametrize(
    ("file", "old", "new", "message"),
    [
        pytest.param(
            "workflows/main.yml",
            "steps/steps.yml#/train'",
            "steps/steps.yml#/no_such_step'",
            "Something went wrong when trying to validate",
            id="unknown-step",
        ),
        pytest.param(
            "steps/steps.yml",
            "process_type: interpolated-script-cmd",
            "process_type: interpolated-script-command",
            "is not a valid REANA specification",
            id="wrong-process-type",
        ),
        pytest.param(
            "reana.yaml",
            "workflow:\n  type: yadage\n",
            "workflow:\n  type: yadage-v2\n",
            "is not a valid REANA specification",
            id="wrong-workflow-type",
        ),
    ],
)
def test_reana_client_rejects_a_broken_spec(reana_client, tmp_path, file, old, new, message):
    folder = _copy_spec(tmp_path)
    _edit(folder / file, old, new)
    rc, out = validate(folder, reana_client)
    assert rc != 0, out
    assert "ERROR" in out, out
    assert message in out, out


def test_reana_client_warns_of_an_unused_parameter(reana_client, tmp_path):
    """What test_reana_client_validates_the_spec would catch: a parameter no stage reads."""
    folder = _copy_spec(tmp_path)
    _edit(folder / "reana.yaml", "    jobs: 4\n", "    jobs: 4\n    epochs: 3\n")
    rc, out = validate(folder, reana_client)
    assert rc == 0, out
    assert 'REANA input parameter "epochs" does not seem to be used' in out, out


# ------------------------------------------------------------------ the spec and the workflow


def test_parameters_are_the_workflow_init_parameters(spec, stages):
    """Every parameter is read by a stage (as an init output under the same key, which is what
    reana-client checks), and every init output a stage reads is given."""
    given = set(spec["inputs"]["parameters"])
    read = _init_outputs(stages)
    assert set(read) == given, f"reana.yaml gives {sorted(given)}, the stages read {sorted(read)}"
    keys = {p["key"] for s in stages.values() for p in s["scheduler"]["parameters"]}
    assert given <= keys, sorted(given - keys)


def test_no_parameter_is_empty(spec):
    """yadage's init step turns '' into the initdir path (os.path.join(initdir, '') exists):
    the workflow's "not given" is 'none' (model, model_sha256) or 'env' (tfaas_url)."""
    params = spec["inputs"]["parameters"]
    assert not [k for k, v in params.items() if v in ("", [], None)]
    assert params["tfaas_url"] == "env" or params["tfaas_url"].startswith(("http://", "https://"))
    assert params["model"] == "none" or (ROOT / params["model"]).is_file()


def test_parameter_paths_resolve_under_the_workspace(spec):
    """REANA's initdir is the workspace root (no options.initdir), where the uploads land:
    yadage makes a relative parameter absolute when it exists there, so each must."""
    options = spec["inputs"].get("options", {})
    assert "initdir" not in options, "the parameters' relative paths assume initdir = workspace"
    params = spec["inputs"]["parameters"]
    uploaded = [Path(d) for d in spec["inputs"]["directories"]]
    generated = set(spec["inputs"]["files"])
    for path in [params["input"], params["model"], *params["files"]]:
        if path in generated or path == "none":
            continue  # written by `make sample` before `reana-client upload`
        assert (ROOT / path).is_file(), path
        assert any(Path(path).is_relative_to(d) for d in uploaded), f"{path} is not uploaded"
    assert set(params["files"]) == generated, "the ROOT files must be uploaded"


def test_files_agree_with_input_yml(spec):
    """The check step insists the workflow's files are input.yml's: same files, same order."""
    params = spec["inputs"]["parameters"]
    input_yml = ROOT / params["input"]
    doc = _load(input_yml)
    listed = [
        line.strip()
        for line in (input_yml.parent / doc["files"]).read_text("utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert [(input_yml.parent / f).resolve() for f in listed] == [
        (ROOT / f).resolve() for f in params["files"]
    ]
    if params["model"] != "none":
        model = (input_yml.parent / doc["model"]).resolve()
        assert model == (ROOT / params["model"]).resolve()
    assert isinstance(params["jobs"], int), "jobs must stay an integer, not a string"


def test_uploads_exist_and_no_stage_shadows_them(spec, stages):
    for folder in spec["inputs"]["directories"]:
        assert (ROOT / folder).is_dir(), folder
    assert (ROOT / spec["workflow"]["file"]).is_file()
    assert spec["workflow"]["type"] == "yadage"
    uploaded = {Path(p).parts[0] for p in spec["inputs"]["directories"] + spec["inputs"]["files"]}
    # stage folders are created at the workspace root, beside the uploads
    assert not uploaded & set(stages), sorted(uploaded & set(stages))
    assert "init" not in stages


def test_outputs_are_written_by_single_step_stages(spec, stages, steps):
    outputs = spec["outputs"]["files"] + spec["outputs"]["directories"]
    assert outputs
    for output in outputs:
        stage, _, rest = output.partition("/")
        assert stage in stages, f"{output}: no stage {stage!r} in {WORKFLOW.name}"
        scheduler = stages[stage]["scheduler"]
        # a scattered stage writes <stage>_<i>/, never <stage>/
        assert scheduler["scheduler_type"] == "singlestep-stage", output
        step = steps[_step_name(stages[stage])]
        written = step["process"]["script"] + json.dumps(step["publisher"])
        assert f"{{outdir}}/{rest}" in written, f"{output}: step {_step_name(stages[stage])}"


def test_retention_rules_spare_inputs_and_outputs(spec, stages):
    rules = spec["workspace"]["retention_days"]
    protected = spec["outputs"]["files"] + spec["outputs"]["directories"]
    protected += spec["inputs"]["directories"] + spec["inputs"]["files"]
    for pattern, days in rules.items():
        assert isinstance(days, int)
        assert days > 0
        stage = pattern.removesuffix("_*")
        assert stage in stages, pattern
        assert stages[stage]["scheduler"]["scheduler_type"] == "multistep-stage", pattern
        assert not [p for p in protected if Path(p).match(pattern)], pattern


# ------------------------------------------------------------------ Gherkin tests


def _feature_steps(path: Path) -> list[tuple[str, str]]:
    """(step type, text) of every step, after checking each line's grammar."""
    found, kind, features, scenarios = [], None, 0, 0
    for number, line in enumerate(path.read_text("utf-8").splitlines(), 1):
        match = GHERKIN_LINE.match(line)
        assert match, f"{path.name}:{number}: not a Gherkin line: {line!r}"
        features += match[1] == "Feature"
        scenarios += match[1] == "Scenario"
        if match[2]:
            keyword, text = line.split(None, 1)
            if keyword in ("Given", "When", "Then"):
                kind = keyword
            assert kind, f"{path.name}:{number}: {keyword} before Given/When/Then"
            found.append((kind, text.strip()))
    assert features == 1, f"{path.name}: {features} Feature lines"
    assert scenarios, f"{path.name}: no Scenario"
    return found


def test_gherkin_files_are_listed_and_exist(spec):
    listed = spec["tests"]["files"]
    for name in listed:
        assert (ROOT / name).is_file(), name
    on_disk = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "reana").glob("*.feature"))
    assert sorted(listed) == on_disk


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (ROOT / "tests" / "reana").glob("*.feature"))
)
def test_gherkin_steps_are_reana_steps(name, spec, stages):
    """Every step is one REANA's runner defines, and every workspace path it names is an upload
    or a stage folder (<stage>/ or <stage>_<i>/ of workflows/main.yml)."""
    steps = _feature_steps(ROOT / "tests" / "reana" / name)
    assert steps
    roots = {Path(p).parts[0] for p in spec["inputs"]["directories"] + spec["inputs"]["files"]}
    for kind, text in steps:
        matches = [
            m for k, pattern in STEP_PATTERNS if k == kind and (m := pattern.fullmatch(text))
        ]
        assert matches, f"{name}: no REANA {kind} step reads {text!r}"
        path = matches[0].groupdict().get("path")
        if path is not None:
            first = Path(path.strip('"')).parts[0]
            stage = re.sub(r"_\d+$", "", first)
            assert first in roots or stage in stages, f"{name}: {path} is in no stage folder"


def test_gherkin_pattern_table_rejects_other_phrases():
    """The check above can fail: phrases REANA's runner lacks match nothing."""
    for text in ("all the jobs should have finished successfully", "the workflow has ended"):
        assert not any(p.fullmatch(text) for _, p in STEP_PATTERNS), text


# ------------------------------------------------------------------ a REANA-like run


@dataclass(frozen=True)
class ReanaRun:
    workspace: Path
    url: str  # the stand-in TFaaS server's, given as the TFAAS_URL secret
    returncode: int
    log: str

    def step_log(self, step: str) -> str:
        path = self.workspace / step / "_packtivity" / f"{step}.run.log"
        return path.read_text("utf-8")[-3000:] if path.is_file() else f"(no {path})"


@pytest.fixture(scope="module")
def reana_run(tmp_path_factory) -> ReanaRun:
    """The workflow run the way REANA's yadage engine runs it: the uploads copied into a fresh
    workspace, which is yadage's work folder, its top level (+ options.toplevel) and its initdir
    (+ options.initdir); reana.yaml's parameters as the init data; TFAAS_URL set as a REANA
    secret would be. Steps run as local processes (rootml's packtivity plugin) instead of
    Kubernetes jobs, on 600 sample events instead of `make sample`'s 20,000."""
    yadage_run = Path(sys.executable).with_name("yadage-run")
    if not yadage_run.exists():
        pytest.skip(
            "yadage-run is not installed beside this Python (pip install 'rootml[workflow]')"
        )
    spec = _load(REANA_YAML)
    base = tmp_path_factory.mktemp("reana")
    ws = base / "workspace"
    ws.mkdir()
    for folder in spec["inputs"]["directories"]:
        shutil.copytree(ROOT / folder, ws / folder)
    (sample_dir,) = {Path(f).parent for f in spec["inputs"]["files"]}
    rootml = str(Path(sys.executable).with_name("rootml"))
    sample = [rootml, "-q", "sample", "--out", str(ws / sample_dir), "--events", "600"]
    subprocess.run([*sample, "--seed", "3"], check=True, capture_output=True, timeout=120)
    missing = [f for f in spec["inputs"]["files"] if not (ws / f).is_file()]
    assert not missing, f"rootml sample did not write the uploaded files {missing}"
    options = spec["inputs"].get("options", {})
    init = base / "parameters.yml"
    init.write_text(yaml.safe_dump(spec["inputs"]["parameters"]), "utf-8")
    cmd = [str(yadage_run), "-t", str(ws / options.get("toplevel", "")), str(ws)]
    cmd += [spec["workflow"]["file"], str(init), "-d", f"initdir={ws / options.get('initdir', '')}"]
    cmd += ["--plugins", "rootml.workflow.plugin", "-b", "multiproc:2", "--no-visualize"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFAAS_")}
    # ``rootml serve`` on 127.0.0.1 as the stand-in TFaaS server, as rootml run starts it
    config = ServerConfig(models=base / "models", port=0)
    with EmbeddedServer(config, base / "server.log") as server:
        url = server.url
        env.update(ROOTML_ENGINE="local", TFAAS_URL=url, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(
            cmd, cwd=base, env=env, capture_output=True, text=True, timeout=900, check=False
        )
    return ReanaRun(ws, url, proc.returncode, (proc.stdout + proc.stderr)[-4000:])


@pytest.mark.tensorflow
def test_reana_like_run_trains_and_evaluates(reana_run):
    ws = reana_run.workspace
    checked = json.loads((ws / "check" / "inputs.json").read_text("utf-8"))
    # yadage's init made the relative parameters absolute: they exist under initdir
    assert checked["files"] == [str(ws / "example" / n) for n in ("signal.root", "background.root")]
    assert checked["input"] == str(ws / "inputs" / "input.yml")
    for output in ("train/bundle", "evaluate/report", "evaluate/report/metrics.json"):
        assert (ws / output).exists(), f"{output}\n{reana_run.log}"
    assert (ws / "train" / "bundle" / "model.onnx").is_file()
    assert "inputs/model.py" in reana_run.step_log("train")
    metrics = json.loads((ws / "evaluate" / "report" / "metrics.json").read_text("utf-8"))
    assert 0.0 <= metrics["auc"] <= 1.0


@pytest.mark.tensorflow
def test_reana_like_run_writes_every_output(reana_run, spec):
    assert reana_run.returncode == 0, f"{reana_run.log}\npublish: {reana_run.step_log('publish')}"
    for output in spec["outputs"]["files"] + spec["outputs"]["directories"]:
        assert (reana_run.workspace / output).exists(), output
    receipt = json.loads((reana_run.workspace / "publish" / "receipt.json").read_text("utf-8"))
    assert receipt["name"] == spec["inputs"]["parameters"]["name"]
    # tfaas_url 'env': published to the server named by the TFAAS_URL secret, and verified
    assert receipt["url"] == reana_run.url
    assert receipt["verified"]
