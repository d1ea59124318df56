"""The workflow: run, track, provenance and replay."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .settings import add_option


def cmd_run(args: argparse.Namespace) -> int:
    from ..workflow.run import RunOptions, run

    if args.input and args.mlaas4hep:
        from ..exceptions import ConfigError

        raise ConfigError("give --input or --mlaas4hep, not both")
    run(
        RunOptions(
            input=Path(args.input) if args.input else None,
            mlaas4hep=Path(args.mlaas4hep) if args.mlaas4hep else None,
            engine=args.engine,
            workdir=Path(args.workdir),
            resume=args.resume,
            url=args.url,
            name=args.name,
            jobs=args.jobs,
            parallel=args.parallel,
            serve=args.serve,
            warm=not args.no_warm,
            mlflow=args.mlflow,
        )
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from ..storage import write_json
    from ..tracking import NONE, track

    if args.mlflow == NONE:
        doc = {"tracked": False}
    else:
        doc = {"tracked": True, **track(args.mlflow, Path(args.bundle), Path(args.report))}
    if args.out:
        write_json(args.out, doc)
    print(json.dumps(doc))
    return 0


def cmd_provenance(args: argparse.Namespace) -> int:
    from ..storage import write_json
    from ..workflow.provenance import build_in_step

    params = {
        "input": args.input,
        "files": args.files,
        "checksums": args.checksums,
        "model": args.model,
        "model_sha256": args.model_sha256,
        "name": args.name,
        "jobs": args.jobs,
        "mlflow": args.mlflow,
    }
    write_json(args.out, build_in_step(Path(args.workdir), params))
    print(args.out)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from ..workflow.replay import replay

    result = replay(args.manifest, Path(args.workdir), engine=args.engine)
    return 0 if result["identical_results"] else 1


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``rootml`` parser."""
    p = sub.add_parser("run", help="run the whole workflow with yadage (Docker or local)")
    p.add_argument(
        "--input", metavar="INPUT_YML", help="rootml input.yml (default inputs/input.yml)"
    )
    p.add_argument(
        "--mlaas4hep",
        metavar="DIR",
        help="a folder with MLaaS4HEP's files.txt, labels.txt, params.json and model.py",
    )
    p.add_argument(
        "--engine",
        choices=["auto", "docker", "local"],
        help="auto (default): Docker when an engine answers and the images exist or build",
    )
    p.add_argument("--workdir", default="rootml-run", help="run folder (default rootml-run)")
    p.add_argument("--resume", action="store_true", help="continue a failed run in --workdir")
    p.add_argument("--url", help="TFaaS server to publish to (default: an embedded rootml serve)")
    p.add_argument("--name", help="model name on the server (default: input.yml publish.name)")
    p.add_argument("--jobs", type=int, default=4, help="most preprocess jobs")
    p.add_argument("--parallel", type=int, default=0, help="steps at once (default: CPU count)")
    p.add_argument("--serve", action="store_true", help="keep the embedded server up at the end")
    p.add_argument(
        "--no-warm",
        action="store_true",
        help="start every step in a fresh interpreter (default: fork each from one that has "
        "its imports done: locally a warm process, under Docker a warm container of the "
        "step's image)",
    )
    p.add_argument(
        "--mlflow",
        nargs="?",
        const="default",
        metavar="URI",
        help="log the model to MLflow (default URI: an SQLite store in the run folder)",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("track", help="log a trained, evaluated model to MLflow")
    p.add_argument(
        "--mlflow",
        required=True,
        metavar="URI",
        help="MLflow tracking URI (sqlite:///PATH/mlflow.db, http://...), or none",
    )
    p.add_argument("--bundle", required=True, help="bundle folder written by 'rootml train'")
    p.add_argument("--report", required=True, help="report folder written by 'rootml evaluate'")
    p.add_argument("--out", help="tracking.json to write (run id)")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("provenance", help="the provenance manifest of a finished workflow run")
    add_option(
        p, "--workdir", old="--run-dir", required=True, help="the run's folder (its stage folders)"
    )
    p.add_argument("--input", required=True, metavar="INPUT_YML")
    p.add_argument("--files", nargs="+", required=True)
    p.add_argument("--checksums", nargs="+", required=True)
    p.add_argument("--model", required=True, help="model.py, or none")
    p.add_argument("--model-sha256", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--jobs", type=int, required=True)
    p.add_argument("--mlflow", required=True)
    p.add_argument("--out", required=True, help="provenance.json to write")
    p.set_defaults(func=cmd_provenance)

    p = sub.add_parser("replay", help="re-run a recorded run and compare its results")
    p.add_argument("manifest", help="provenance.json of the run (written by rootml run)")
    p.add_argument("--workdir", default="rootml-replay", help="folder for the replay")
    p.add_argument(
        "--engine", choices=["docker", "local"], help="default: the recorded run's engine"
    )
    p.set_defaults(func=cmd_replay)
