"""The ``rootml`` command line: parse options, load settings once, call one library function.

Heavy modules (uproot, h5py, TensorFlow) are imported inside the subcommands, so
``rootml --help`` is instant. A :class:`~rootml.exceptions.RootmlError` becomes one readable
message on stderr and exit status 1; nothing else is caught.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .exceptions import RootmlError

log = logging.getLogger("rootml")

#: set by the workflow's steps: where the step records the Python environment it ran in
STEP_ENV = "ROOTML_STEP_ENV"


# ------------------------------------------------------------------ settings from flags


def _add_settings_flags(p: argparse.ArgumentParser, *, layout: bool) -> None:
    g = p.add_argument_group("settings (override --params / --input)")
    g.add_argument("--input", metavar="INPUT_YML", help="rootml input.yml")
    g.add_argument("--params", metavar="PARAMS_JSON", help="MLaaS4HEP params.json")
    g.add_argument("--tree", help="TTree or RNTuple name (params.json 'branch')")
    g.add_argument("--branches", help="comma list of branches to use (selected_branches)")
    g.add_argument("--exclude", help="comma list of branches to skip (exclude_branches)")
    g.add_argument("--identifiers", help="comma list of identifier branches, never features")
    g.add_argument("--redirector", help="XRootD prefix for LFNs (/store/...)")
    if not layout:
        return
    g.add_argument("--scaling", choices=["minmax", "standard"])
    g.add_argument("--jagged-cap", help="max, a quantile such as p99 or p99.9, or an integer")
    g.add_argument(
        "--counts", action="store_true", default=None, help="add a count feature per collection"
    )
    g.add_argument(
        "--masks", action="store_true", default=None, help="add mask features per collection"
    )
    g.add_argument("--nan-policy", choices=["error", "drop", "replace"])
    g.add_argument("--pad-value", type=float)
    g.add_argument("--nevts", type=int, help="events to use over all files (-1: all)")
    g.add_argument("--chunk-size", type=int, help="events per shard (-1: one per file)")
    g.add_argument("--val", type=float, dest="val_fraction", help="validation fraction")
    g.add_argument("--test", type=float, dest="test_fraction", help="test fraction")
    g.add_argument("--seed", type=int)


def _names(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _settings(args: argparse.Namespace):
    """(Inputs or None, Settings) from --input/--params and the flags."""
    from .config import Settings, load_input, load_params, with_overrides

    inputs = None
    if args.input:
        inputs, settings = load_input(args.input)
    else:
        settings = Settings(**(load_params(args.params) if args.params else {}))
    cap = getattr(args, "jagged_cap", None)
    if cap is not None and cap.isdigit():
        cap = int(cap)
    changes = {
        "tree": args.tree,
        "selected": _names(getattr(args, "branches", None)),
        "exclude": _names(getattr(args, "exclude", None)),
        "identifiers": _names(getattr(args, "identifiers", None)),
        "redirector": args.redirector,
    }
    for key in (
        "scaling",
        "counts",
        "masks",
        "nan_policy",
        "pad_value",
        "nevts",
        "chunk_size",
        "val_fraction",
        "test_fraction",
        "seed",
    ):
        changes[key] = getattr(args, key, None)
    changes["jagged_cap"] = cap
    return inputs, with_overrides(settings, **changes)


# ------------------------------------------------------------------ subcommands


def cmd_sample(args: argparse.Namespace) -> int:
    from .sample import make_sample

    result = make_sample(args.out, args.events, args.seed, tree=args.tree)
    print(
        json.dumps(
            {
                "files": [str(f) for f in result.files],
                "inputs": str(result.inputs),
                "entries": list(result.entries),
            }
        )
    )
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .fetching import fetch

    tree, redirector = args.tree, args.redirector
    if args.input or args.params:
        _, settings = _settings(args)
        tree, redirector = settings.tree, settings.redirector
    record = fetch(
        args.src,
        args.out,
        tree=tree,
        redirector=redirector,
        sha256=args.sha256,
        retries=args.retries,
        timeout=args.timeout,
    )
    print(json.dumps(record.to_json()))
    return 0


def _source_of(arg: str, redirector: str | None):
    """A path/URL, or a fetch.json record written by ``rootml fetch``."""
    from .schemas import validate
    from .sources import Source, resolve
    from .storage import read_json

    if arg.endswith(".json"):
        record = read_json(arg)
        validate(record, "fetch-record", where=f"file {arg}")
        local = resolve(record["path"])
        return Source(record["source"], local.url, local.scheme), record["sha256"], record["size"]
    return resolve(arg, redirector=redirector), None, None


def cmd_specs(args: argparse.Namespace) -> int:
    from .specs import file_specs, specs_filename
    from .storage import write_json

    inputs, settings = _settings(args)
    label_branch = args.label_branch or (inputs.label_branch if inputs else None)
    source, sha256, size = _source_of(args.file, settings.redirector)
    doc = file_specs(
        source,
        settings.tree,
        selected=settings.selected,
        exclude=settings.exclude,
        identifiers=settings.identifiers,
        label_branch=label_branch,
        sha256=sha256,
        size=size,
        step=args.step,
        workers=args.workers,
        columns=args.columns,
    )
    name = specs_filename(doc["file"]["basename"])
    out = Path(args.out or name)
    if out.is_dir() or (args.out or "").endswith("/"):
        out = out / name
    write_json(out, doc)
    print(out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .config import list_arg, parse_labels
    from .exceptions import ConfigError
    from .layout import job_batches, merge, write_layout
    from .specs import load_file_specs

    inputs, settings = _settings(args)
    docs = [load_file_specs(p) for p in args.specs]
    if args.files:
        files = list_arg(args.files[0]) if len(args.files) == 1 else list(args.files)
    else:
        files = list(inputs.files) if inputs else None
    if files is not None:
        docs = _order_by_files(docs, files)
    if args.labels is not None:
        labels, label_branch = parse_labels(list_arg(args.labels), len(docs))
    elif inputs is not None:
        labels, label_branch = inputs.labels, inputs.label_branch
    else:
        raise ConfigError(
            "merge needs --labels (labels.txt, a comma list, or branch:NAME) or --input"
        )
    layout = merge(docs, settings, labels=labels, label_branch=label_branch)
    if args.batches:
        batches = job_batches(layout["chunks"], args.max_batches)
    write_layout(args.out, layout)
    if args.batches:
        import yaml

        from .storage import atomic_path

        doc = {"layout": str(Path(args.out).resolve()), "batches": batches}
        with atomic_path(args.batches) as tmp:
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    print(args.out)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The workflow's first step: a valid input.yml whose files are the ones being scattered."""
    from dataclasses import asdict

    from .config import file_basename, load_input
    from .exceptions import ConfigError
    from .storage import write_json

    inputs, settings = load_input(args.input)
    given = list(args.files or ())
    if not given:
        raise ConfigError(
            "the workflow got an empty file list (parameter 'files'): list the ROOT files in "
            "reana.yaml's inputs.parameters.files (or run 'rootml run', which takes them from "
            f"{args.input})"
        )
    names = [file_basename(f) for f in given]
    expected = [file_basename(f) for f in inputs.files]
    if names != expected:
        raise ConfigError(
            f"the workflow's files {names} are not the files of {args.input} {expected}: "
            "give the same files, in the same order, in both"
        )
    checksums = list(args.checksums or ())
    if len(checksums) != len(given):
        raise ConfigError(
            f"the workflow got {len(checksums)} checksums for {len(given)} files (parameter "
            "'checksums'): give one per file, 'none' where it is not known"
        )
    bad = [c for c in checksums if c != "none" and not re.fullmatch(r"[0-9a-f]{64}", c)]
    if bad:
        raise ConfigError(
            f"checksum {bad[0]!r} is neither 'none' nor a sha256 (64 hexadecimal digits)"
        )
    if settings.model and not Path(settings.model).is_file():
        raise ConfigError(
            f"model file {settings.model} (input.yml 'model') does not exist; "
            "fix the path (relative to input.yml) or remove the key for the default network"
        )
    doc = {
        "input": str(Path(args.input).resolve()),
        "files": given,
        "checksums": checksums,
        "labels": list(inputs.labels) if inputs.labels else {"branch": inputs.label_branch},
        "settings": asdict(settings),
    }
    write_json(args.out, doc)
    print(args.out)
    return 0


def _order_by_files(docs: list[dict], files: Sequence[str]) -> list[dict]:
    from .config import file_basename
    from .exceptions import ConfigError

    by_name = {d["file"]["basename"]: d for d in docs}
    names = [file_basename(f) for f in files]
    missing = [n for n in names if n not in by_name]
    extra = sorted(set(by_name) - set(names))
    if missing or extra:
        raise ConfigError(
            f"the specs do not match the file list: no specs for {missing}, specs of files not "
            f"in the list: {extra}; run 'rootml specs' once per file of files.txt"
        )
    return [by_name[n] for n in names]


def cmd_preprocess(args: argparse.Namespace) -> int:
    from .layout import load_layout
    from .preprocessing import parse_chunks, preprocess
    from .schemas import validate
    from .storage import read_json

    layout = load_layout(args.specs)
    ids = parse_chunks(args.chunk, len(layout["chunks"]))
    paths = {}
    for record_path in args.fetched or ():
        record = read_json(record_path)
        validate(record, "fetch-record", where=f"file {record_path}")
        paths[Path(record["path"]).name] = record["path"]
    written = preprocess(
        layout, ids, args.out, paths=paths, columns=args.columns or (), workers=args.workers
    )
    for path in written:
        print(path)
    return 0


def _shard_paths(items: Sequence[str]) -> list[Path]:
    """Shard files, or folders holding ``*.h5`` shards."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        out.extend(sorted(path.glob("*.h5")) if path.is_dir() else [path])
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from .config import Settings, load_input, load_params
    from .layout import load_layout
    from .training import TrainOptions, train

    model_path = args.model
    if args.input:
        _, settings = load_input(args.input)
        model_path = model_path or settings.model
    else:
        settings = Settings(**(load_params(args.params) if args.params else {}))
    options = TrainOptions(
        epochs=args.epochs or settings.epochs,
        batch_size=args.batch_size or settings.batch_size,
        shuffle=settings.shuffle,
        seed=settings.seed if args.seed is None else args.seed,
        patience=args.patience,
        class_weight=args.class_weight,
    )
    layout = load_layout(args.specs)
    bundle = train(
        layout,
        _shard_paths(args.shards),
        args.out,
        model_path=model_path,
        options=options,
        name=args.name,
    )
    print(bundle)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .scoring import evaluate

    metrics = evaluate(args.bundle, _shard_paths(args.shards), args.out, max_train=args.max_train)
    keys = ("n_test", "auc", "auc_macro", "accuracy", "log_loss")
    print(json.dumps({k: metrics[k] for k in keys if k in metrics}))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .bundle import load_bundle
    from .scoring import predict_files, write_predictions

    if args.url:
        from .publishing import predict_remote, token_from_env

        results = predict_remote(
            args.bundle,
            args.files,
            args.url,
            name=args.name,
            token=token_from_env(args.token_env),
            redirector=args.redirector,
        )
    else:
        results = predict_files(args.bundle, args.files, redirector=args.redirector)
    classes = load_bundle(args.bundle).layout["labels"]["classes"]
    if args.out:
        print(write_predictions(args.out, results, classes))
    else:
        for r in results:
            mean = r["scores"].mean(axis=0).tolist() if len(r["scores"]) else None
            print(json.dumps({"file": r["file"], "events": len(r["entry"]), "mean_score": mean}))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ArchiveLimits, ServerConfig, serve

    mib = 1 << 20
    serve(
        ServerConfig(
            models=Path(args.models),
            host=args.host,
            port=args.port,
            token_file=Path(args.token_file) if args.token_file else None,
            workers=args.workers,
            cache_size=args.cache_size,
            threads=args.threads,
            max_request_bytes=args.max_request_mb * mib,
            max_upload_bytes=args.max_upload_mb * mib,
            archive=ArchiveLimits(
                max_members=args.max_members,
                max_member_bytes=args.max_upload_mb * mib,
                max_unpacked_bytes=args.max_unpacked_mb * mib,
            ),
            access_log=args.access_log,
            log_level="debug" if args.verbose > 1 else ("warning" if args.quiet else "info"),
        )
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .publishing import publish, token_from_env

    receipt = publish(
        args.bundle,
        args.url,
        args.out,
        name=args.name,
        token=token_from_env(args.token_env),
        form=args.form,
        timeout=args.timeout,
    )
    print(json.dumps({k: receipt[k] for k in ("url", "name", "server", "reference")}))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .publishing import Client, token_from_env

    print(json.dumps(Client(args.url, token_from_env(args.token_env)).models(), indent=1))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .publishing import Client, token_from_env

    Client(args.url, token_from_env(args.token_env)).delete(args.name)
    print(json.dumps({"deleted": args.name}))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from .workflow.runner import RunOptions, run

    if args.input and args.mlaas4hep:
        from .exceptions import ConfigError

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
            mlflow=args.mlflow,
        )
    )
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from .storage import write_json
    from .tracking import NONE, track

    if args.mlflow == NONE:
        doc = {"tracked": False}
    else:
        doc = {"tracked": True, **track(args.mlflow, Path(args.bundle), Path(args.report))}
    if args.out:
        write_json(args.out, doc)
    print(json.dumps(doc))
    return 0


def cmd_provenance(args: argparse.Namespace) -> int:
    from .storage import write_json
    from .workflow.provenance import build_in_step

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
    write_json(args.out, build_in_step(Path(args.run_dir), params))
    print(args.out)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from .workflow.replay import replay

    result = replay(args.manifest, Path(args.workdir), engine=args.engine)
    return 0 if result["identical_results"] else 1


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rootml",
        description="ROOT files to a trained, evaluated and served Keras model.",
    )
    parser.add_argument("--version", action="version", version=f"rootml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("sample", help="write example signal/background ROOT files and inputs/")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--events", type=int, default=20_000, help="total events over both files")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tree", default="events")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "fetch", help="download a remote file (or verify a local one) and record its checksum"
    )
    p.add_argument("src", help="local path, file://, https://, root:// URL or /store/ LFN")
    p.add_argument("--out", required=True, help="folder for the copy and fetch.json")
    p.add_argument("--sha256", help="expected checksum")
    p.add_argument("--retries", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30.0)
    g = p.add_argument_group("settings (override --params / --input)")
    g.add_argument("--input", metavar="INPUT_YML", help="rootml input.yml (tree, redirector)")
    g.add_argument("--params", metavar="PARAMS_JSON", help="MLaaS4HEP params.json")
    g.add_argument("--tree", help="check that this tree opens")
    g.add_argument("--redirector", help="XRootD prefix for LFNs")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("specs", help="per-branch statistics of one file (specs-<name>.json)")
    p.add_argument("file", help="ROOT file path/URL, or a fetch.json written by 'rootml fetch'")
    p.add_argument("--label-branch", help="branch holding class ids (always read)")
    p.add_argument("--out", help="output JSON file or folder (default specs-<name>.json)")
    p.add_argument("--step", type=int, default=100_000, help="entries read per step")
    p.add_argument("--workers", type=int, default=1, help="decompression threads")
    p.add_argument(
        "--columns",
        metavar="DIR",
        help="also stage the scanned branches' decompressed values in DIR, so preprocess "
        "does not decompress the file again (takes their uncompressed size on disk)",
    )
    _add_settings_flags(p, layout=False)
    p.set_defaults(func=cmd_specs)

    p = sub.add_parser(
        "merge", help="merge per-file specs into the layout and chunk plan (specs.json)"
    )
    p.add_argument("specs", nargs="+", help="per-file specs JSON files")
    p.add_argument("--labels", help="labels.txt, a comma list (one per file), or branch:NAME")
    p.add_argument(
        "--files", nargs="+", help="files.txt, a comma list, or the files, giving the file order"
    )
    p.add_argument("--out", required=True, help="output specs.json")
    p.add_argument(
        "--batches",
        metavar="YML",
        help="also write the chunk plan cut into preprocess jobs (layout path + chunk ranges)",
    )
    p.add_argument("--max-batches", type=int, default=8, help="most preprocess jobs (--batches)")
    _add_settings_flags(p, layout=True)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("check", help="check a workflow input: input.yml and the file list")
    p.add_argument("--input", required=True, metavar="INPUT_YML", help="rootml input.yml")
    p.add_argument("--files", nargs="*", help="the files the workflow scatters over")
    p.add_argument("--checksums", nargs="*", help="their sha256, or 'none', one per file")
    p.add_argument("--out", required=True, help="inputs.json to write")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preprocess", help="write HDF5 shards for chunks of the plan")
    p.add_argument("--specs", required=True, help="merged specs.json")
    p.add_argument(
        "--chunk",
        action="append",
        required=True,
        help="chunk id, range a-b, comma list, or 'all' (repeatable)",
    )
    p.add_argument("--out", required=True, help="shard.h5 for one chunk, else a folder")
    p.add_argument(
        "--fetched", nargs="+", action="extend", help="fetch.json records of local copies"
    )
    p.add_argument(
        "--columns",
        nargs="+",
        action="extend",
        metavar="DIR",
        help="folders staged by 'rootml specs --columns': their files are read from them",
    )
    p.add_argument("--workers", type=int, default=1, help="decompression threads")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser(
        "train", help="train model(idim) from model.py on the shards; write a bundle"
    )
    p.add_argument("--specs", required=True, help="merged specs.json")
    p.add_argument("--shards", nargs="+", required=True, help="shard files or folders")
    p.add_argument("--model", help="model.py defining model(idim) (default: a small MLP)")
    p.add_argument("--params", help="MLaaS4HEP params.json (epochs, batch_size, shuffle, seed)")
    p.add_argument("--input", help="rootml input.yml")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--name", default="rootml_model", help="model name for TFaaS")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--patience", type=int, default=3, help="early-stopping patience (0: off)")
    p.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="metrics, plots and an HTML report on the test split")
    p.add_argument("--bundle", required=True, help="bundle folder written by 'rootml train'")
    p.add_argument("--shards", nargs="+", required=True, help="shard files or folders")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument(
        "--max-train",
        type=int,
        default=200_000,
        help="train events scored for the overtraining check",
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="score every event of raw ROOT files through a bundle")
    p.add_argument("--bundle", required=True)
    p.add_argument("files", nargs="+", help="ROOT files (paths or URLs)")
    p.add_argument("--redirector", help="XRootD prefix for LFNs")
    p.add_argument("--out", help="predictions .h5, .csv or .json (default: a summary on stdout)")
    p.add_argument("--url", help="score through this TFaaS / rootml serve server instead")
    p.add_argument("--name", help="model name on the server (default: the bundle's)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("serve", help="serve bundles over HTTP (TFaaS, KServe V2, TF Serving)")
    p.add_argument("--models", required=True, help="model store folder (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8083)
    p.add_argument(
        "--token-file", help="file holding the bearer token required for uploads and deletes"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads per model")
    p.add_argument("--cache-size", type=int, default=10, help="loaded models kept per worker")
    p.add_argument("--max-request-mb", type=int, default=64, help="prediction body limit")
    p.add_argument("--max-upload-mb", type=int, default=512, help="upload body limit")
    p.add_argument("--max-unpacked-mb", type=int, default=1024, help="unpacked bundle limit")
    p.add_argument("--max-members", type=int, default=10_000, help="files in one bundle")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("publish", help="upload a bundle to a TFaaS server and verify it")
    p.add_argument("--bundle", required=True, help="bundle folder written by 'rootml train'")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8083")
    p.add_argument("--name", help="model name on the server (default: the bundle's)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    p.add_argument("--out", required=True, help="receipt.json to write")
    p.add_argument("--form", action="store_true", help="multipart form upload (rootml serve)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.set_defaults(func=cmd_publish)

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
    p.add_argument("--run-dir", required=True, help="the run's folder (its stage folders)")
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

    p = sub.add_parser("models", help="list the models on a server")
    p.add_argument("--url", required=True)
    p.add_argument("--token-env", metavar="VAR")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("delete", help="delete a model from a server")
    p.add_argument("name", help="model name")
    p.add_argument("--url", required=True)
    p.add_argument("--token-env", metavar="VAR")
    p.set_defaults(func=cmd_delete)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.verbose < 2:  # TensorFlow's C++ start-up lines drown the one INFO line per stage
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if os.environ.get(STEP_ENV):  # inside a workflow step: record this environment once
        from .workflow.provenance import record_environment

        record_environment(Path(os.environ[STEP_ENV]))
    try:
        return args.func(args)
    except RootmlError as err:
        print(f"rootml {args.command}: error: {err}", file=sys.stderr)
        return 1
