"""Serving and publishing: serve, publish, models and delete."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_serve(args: argparse.Namespace) -> int:
    from ..server import ArchiveLimits, ServerConfig, serve

    mib = 1 << 20
    serve(
        ServerConfig(
            models=Path(args.models),
            host=args.host,
            port=args.port,
            grpc_port=args.grpc_port,
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
            run_bundle_hooks=args.run_bundle_hooks,
            log_level="debug" if args.verbose > 1 else ("warning" if args.quiet else "info"),
        )
    )
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from ..client import token_from_env
    from ..publishing import publish

    receipt = publish(
        args.bundle,
        args.url,
        args.out,
        name=args.name,
        token=token_from_env(args.token_env),
        form=args.form,
        timeout=args.timeout,
        wait=args.wait,
    )
    print(json.dumps({k: receipt[k] for k in ("url", "name", "server", "reference")}))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..client import Client, token_from_env

    print(json.dumps(Client(args.url, token_from_env(args.token_env)).models(), indent=1))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ..client import Client, token_from_env

    Client(args.url, token_from_env(args.token_env)).delete(args.name)
    print(json.dumps({"deleted": args.name}))
    return 0


def add_commands(sub) -> None:
    """Add this module's subcommands to the ``rootml`` parser."""
    p = sub.add_parser(
        "serve", help="serve bundles over HTTP (TFaaS, KServe V2, TF Serving) and gRPC (KServe V2)"
    )
    p.add_argument("--models", required=True, help="model store folder (created if missing)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8083)
    p.add_argument(
        "--grpc-port",
        type=int,
        help="also serve KServe V2 over gRPC (inference.GRPCInferenceService) on this port, on "
        "the same host (e.g. 8081, Triton's; off unless given)",
    )
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
    p.add_argument(
        "--run-bundle-hooks",
        action="store_true",
        help="run a model's preprocessing(rec) from its layout for 'record' requests (the "
        "bundle's code runs in the server: only for bundles you trust)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("publish", help="upload a bundle to a TFaaS server and verify it")
    p.add_argument("--bundle", required=True, help="bundle folder written by 'rootml train'")
    p.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8083")
    p.add_argument("--name", help="model name on the server (default: the bundle's)")
    p.add_argument("--token-env", metavar="VAR", help="environment variable holding the token")
    p.add_argument("--out", required=True, help="receipt.json to write")
    p.add_argument("--form", action="store_true", help="multipart form upload (rootml serve)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="give a server that refuses connections this long to come up (default: 0)",
    )
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("models", help="list the models on a server")
    p.add_argument("--url", required=True)
    p.add_argument("--token-env", metavar="VAR")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("delete", help="delete a model from a server")
    p.add_argument("name", help="model name")
    p.add_argument("--url", required=True)
    p.add_argument("--token-env", metavar="VAR")
    p.set_defaults(func=cmd_delete)
