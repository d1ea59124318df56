"""The data path: sample, fetch, specs, merge, check and preprocess."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

from .settings import (
    add_layout_option,
    add_option,
    add_settings_flags,
    add_threads_option,
    settings_from,
)


def _source_of(arg: str, redirector: str | None):
    """A path/URL, or a fetch.json record written by ``rootml fetch``."""
    from ..schemas import validate
    from ..sources import Source, resolve
    from ..storage import read_json

    if arg.endswith(".json"):
        record = read_json(arg)
        validate(record, "fetch-record", where=f"file {arg}")
        local = resolve(record["path"])
        return Source(record["source"], local.url, local.scheme), record["sha256"], record["size"]
    return resolve(arg, redirector=redirector), None, None


def _order_by_files(docs: list[dict], files: Sequence[str]) -> list[dict]:
    from ..config import file_basename
    from ..exceptions import ConfigError

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


def cmd_sample(args: argparse.Namespace) -> int:
    if args.kind == "rucio":
        from ..sample import make_rucio_sample

        result = make_rucio_sample(args.out, args.events, args.seed)
    else:
        from ..sample import make_sample

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
    from ..fetching import fetch

    tree, redirector, file_format = args.tree, args.redirector, args.file_format
    if args.input or args.params:
        _, settings = settings_from(args)
        tree, redirector, file_format = settings.tree, settings.redirector, settings.file_format
    record = fetch(
        args.src,
        args.out,
        tree=tree,
        redirector=redirector,
        file_format=file_format,
        sha256=args.sha256,
        retries=args.retries,
        timeout=args.timeout,
    )
    print(json.dumps(record.to_json()))
    return 0


def _label_branch(labels: str | None) -> str | None:
    """The branch ``--labels branch:NAME`` names; labels per file need no branch read."""
    if labels and labels.startswith("branch:"):
        return labels.split(":", 1)[1]
    return None


def cmd_specs(args: argparse.Namespace) -> int:
    from ..specs import file_specs, specs_filename
    from ..storage import write_json

    inputs, settings = settings_from(args)
    label_branch = _label_branch(args.labels) or (inputs.label_branch if inputs else None)
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
        workers=args.threads,
        columns=args.columns,
        derived=settings.derived,
        preprocessing=settings.preprocessing,
        file_format=settings.file_format,
    )
    name = specs_filename(doc["file"]["basename"])
    out = Path(args.out or name)
    if out.is_dir() or (args.out or "").endswith("/"):
        out = out / name
    write_json(out, doc)
    print(out)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..config import list_arg, parse_file_weights, parse_labels
    from ..exceptions import ConfigError
    from ..layout import write_layout
    from ..merging import job_batches, merge
    from ..specs import load_file_specs

    inputs, settings = settings_from(args)
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
    if args.weights is not None:
        weights = parse_file_weights(list_arg(args.weights), args.weights)
    else:
        weights = inputs.weights if inputs is not None else None
    layout = merge(docs, settings, labels=labels, label_branch=label_branch, weights=weights)
    if args.batches:
        batches = job_batches(layout["chunks"], args.jobs)
    write_layout(args.out, layout)
    if args.batches:
        import yaml

        from ..storage import atomic_path

        doc = {"layout": str(Path(args.out).resolve()), "batches": batches}
        with atomic_path(args.batches) as tmp:
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False), "utf-8")
    print(args.out)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """The workflow's first step: a valid input.yml whose files are the ones being scattered."""
    from dataclasses import asdict

    from ..config import file_basename, load_input
    from ..exceptions import ConfigError
    from ..storage import write_json

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


def cmd_preprocess(args: argparse.Namespace) -> int:
    from ..layout import load_layout
    from ..preprocessing import parse_chunks, preprocess
    from ..schemas import validate
    from ..storage import read_json

    layout = load_layout(args.layout)
    ids = parse_chunks(args.chunk, len(layout["chunks"]))
    paths = {}
    for record_path in args.fetched or ():
        record = read_json(record_path)
        validate(record, "fetch-record", where=f"file {record_path}")
        paths[Path(record["path"]).name] = record["path"]
    written = preprocess(
        layout, ids, args.out, paths=paths, columns=args.columns or (), workers=args.threads
    )
    for path in written:
        print(path)
    return 0


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``rootml`` parser."""
    p = sub.add_parser("sample", help="write example signal/background ROOT files and inputs/")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--kind",
        choices=["hep", "rucio"],
        default="hep",
        help="hep: ROOT files and inputs/ (default); rucio: MLaaS4HEP's Rucio example, "
        "gzipped JSON lines and its folder (mlaas4hep/: files, labels, params, model, preproc.py)",
    )
    p.add_argument("--events", type=int, default=20_000, help="total events over all files")
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
    add_settings_flags(p, scope="source")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("specs", help="per-branch statistics of one file (specs-<name>.json)")
    p.add_argument("file", help="ROOT file path/URL, or a fetch.json written by 'rootml fetch'")
    add_option(
        p,
        "--labels",
        old="--label-branch",
        convert=lambda name: f"branch:{name}",
        help="branch:NAME, the branch holding class ids (always read); labels per file "
        "(labels.txt, a comma list) are for 'rootml merge'",
    )
    p.add_argument("--out", help="output JSON file or folder (default specs-<name>.json)")
    p.add_argument("--step", type=int, default=100_000, help="entries read per step")
    add_threads_option(p)
    p.add_argument(
        "--columns",
        metavar="DIR",
        help="also stage the scanned branches' decompressed values in DIR, so preprocess "
        "does not decompress the file again (takes their uncompressed size on disk)",
    )
    add_settings_flags(p, scope="branches")
    p.set_defaults(func=cmd_specs)

    p = sub.add_parser(
        "merge", help="merge per-file specs into the layout and chunk plan (layout.json)"
    )
    p.add_argument("specs", nargs="+", help="per-file specs JSON files")
    p.add_argument("--labels", help="labels.txt, a comma list (one per file), or branch:NAME")
    p.add_argument(
        "--weights",
        help="weights.txt or a comma list: one normalisation per file (xsec x lumi / generated)",
    )
    p.add_argument(
        "--files", nargs="+", help="files.txt, a comma list, or the files, giving the file order"
    )
    p.add_argument("--out", required=True, help="the layout.json to write")
    p.add_argument(
        "--batches",
        metavar="YML",
        help="also write the chunk plan cut into preprocess jobs (layout path + chunk ranges)",
    )
    add_option(
        p,
        "--jobs",
        old="--max-batches",
        type=int,
        default=8,
        help="most preprocess jobs (--batches)",
    )
    add_settings_flags(p, scope="layout")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("check", help="check a workflow input: input.yml and the file list")
    p.add_argument("--input", required=True, metavar="INPUT_YML", help="rootml input.yml")
    p.add_argument("--files", nargs="*", help="the files the workflow scatters over")
    p.add_argument("--checksums", nargs="*", help="their sha256, or 'none', one per file")
    p.add_argument("--out", required=True, help="inputs.json to write")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("preprocess", help="write HDF5 shards for chunks of the plan")
    add_layout_option(p)
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
    add_threads_option(p)
    p.set_defaults(func=cmd_preprocess)
