"""Experiment tracking (optional): one MLflow run per trained model, logged from the bundle and
the evaluation report, by ``rootml track`` (the workflow's ``track`` step).

What is logged: the training parameters (``provenance.json`` of the bundle: seed, epochs,
batch size, model file and checksum, specs digest, input files' checksums), the layout
(features, scaling, caps), per-epoch metrics (``history.json``: loss, accuracy and their val_
twins, with the epoch as step), the test metrics (``metrics.json``), and the bundle and report
folders as artefacts. The tracking URI is MLflow's: ``sqlite:///PATH/mlflow.db`` is a local
store viewable with ``mlflow ui --backend-store-uri sqlite:///PATH/mlflow.db``; an
``http(s)://`` URI is a tracking server. MLflow is the ``rootml[mlflow]`` extra, imported here
only, so the core images stay small.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from .exceptions import ConfigError

log = logging.getLogger(__name__)

EXPERIMENT = "rootml"
#: the workflow's parameter value meaning "do not track"
NONE = "none"


def default_uri(folder: Path) -> str:
    """A local MLflow store in ``folder``."""
    return f"sqlite:///{(folder / 'mlflow.db').resolve()}"


def _artifact_location(uri: str) -> str | None:
    """Beside a local SQLite store (MLflow would use ./mlruns of whatever folder it runs in);
    a tracking server decides for itself."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return None


def _flat(prefix: str, doc: dict) -> dict[str, str]:
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}{key}.", value))
        elif not isinstance(value, list):
            out[f"{prefix}{key}"] = str(value)[:500]
    return out


def track(uri: str, bundle: Path, report: Path, *, experiment: str = EXPERIMENT) -> dict:
    """Log one trained and evaluated model to MLflow; returns ``{uri, experiment, run_id}``."""
    try:
        import mlflow
    except ImportError:
        raise ConfigError(
            "experiment tracking needs MLflow: pip install 'rootml[mlflow]' (in the "
            "environment that runs the track step)"
        ) from None
    bundle, report = Path(bundle), Path(report)
    for path in (bundle / "provenance.json", bundle / "history.json", report / "metrics.json"):
        if not path.is_file():
            raise ConfigError(
                f"cannot track: {path} is missing (a bundle from 'rootml train' "
                "and a report from 'rootml evaluate' are needed)"
            )
    provenance = json.loads((bundle / "provenance.json").read_text("utf-8"))
    history = json.loads((bundle / "history.json").read_text("utf-8"))
    metrics = json.loads((report / "metrics.json").read_text("utf-8"))
    params = json.loads((bundle / "params.json").read_text("utf-8"))
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=_artifact_location(uri))
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=params.get("name")) as run:
        logged = _flat("", {k: v for k, v in provenance.items() if k != "inputs"})
        for i, item in enumerate(provenance.get("inputs", [])):
            logged[f"input.{i}.source"] = str(item.get("source"))[:500]
            logged[f"input.{i}.sha256"] = str(item.get("sha256"))
        logged["features"] = str(len(params.get("features", [])))
        mlflow.log_params(logged)
        for name, values in history.items():
            for epoch, value in enumerate(values):
                mlflow.log_metric(name, float(value), step=epoch)
        mlflow.log_metrics(
            {
                f"test_{k}": float(v)
                for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        )
        mlflow.set_tags({"rootml.model": params.get("name", ""), "rootml.kind": "bundle"})
        mlflow.log_artifacts(str(bundle), artifact_path="bundle")
        mlflow.log_artifacts(str(report), artifact_path="report")
        run_id = run.info.run_id
    log.info("tracked run %s in %s (experiment %s)", run_id, uri, experiment)
    return {"uri": uri, "experiment": experiment, "run_id": run_id}
