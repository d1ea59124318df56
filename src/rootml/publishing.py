"""The publish stage and the serving client: pack a bundle as TFaaS expects, upload it, check
that the server lists it and serves the bundle's reference predictions, and write a receipt.

The client speaks to ``rootml serve`` and to the Go TFaaS alike, with the standard library
only (no TLS or HTTP package to install in the publish image). It finds out which one it
talks to from ``GET /v2`` (rootml answers with its name; the Go server has no such route)
and uses only TFaaS routes with the Go server:

- upload: ``POST /upload``, the gzip tarball as the body with ``Content-Encoding: gzip``;
  the model name is the tarball's top-level folder (the Go server's bundle upload; its form
  upload takes single files, not a SavedModel folder). ``--form`` sends the tarball as the
  file field ``model`` with a ``name`` field instead (rootml serve only);
- check: ``GET /models`` must list the name, with the bundle's ``layout_digest``;
- predict: ``POST /json`` with ``keys`` (the bundle's features) and ``values``: all reference
  rows at once for rootml, one row per request for the Go server (it takes one row only).

JSON has no NaN: rootml takes ``null`` as a missing object, but the Go server decodes ``null``
into a float32 as 0. Against the Go server, rows are sent with 0 in place of ``null`` and
compared with the bundle's own ``model.onnx`` on exactly those rows (the receipt says so).

Redirects are never followed (they would carry the token elsewhere), and the token is never
logged or written to the receipt.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import logging
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

from . import __version__
from .bundle import load_bundle
from .client import ROOTML, Client, check_name
from .exceptions import ConfigError, PublishError
from .layout import digest_of
from .storage import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

TOLERANCE = 1e-5


# ------------------------------------------------------------------ the tarball


def pack_bundle(bundle: str | Path, name: str, out: BinaryIO) -> None:
    """Write a gzip tarball of ``bundle`` whose one top-level folder is ``name`` (the model
    name TFaaS takes), with ``params.json``'s ``name`` set to match. The bytes depend only on
    the bundle's contents: sorted members, fixed times, owners and modes."""
    bundle = Path(bundle)
    check_name(name)
    stamp = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    with (
        gzip.GzipFile(filename="", fileobj=out, mode="wb", mtime=stamp) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.addfile(_info(name, tarfile.DIRTYPE, 0, stamp))
        for path in sorted(bundle.rglob("*")):
            rel = path.relative_to(bundle).as_posix()
            if path.is_symlink():
                raise ConfigError(
                    f"bundle {bundle} holds a symbolic link ({rel}); servers refuse links: "
                    "copy the file in instead"
                )
            arcname = f"{name}/{rel}"
            if path.is_dir():
                tar.addfile(_info(arcname, tarfile.DIRTYPE, 0, stamp))
            elif rel == "params.json":
                params = json.loads(path.read_text("utf-8"))
                params["name"] = name
                data = (json.dumps(params, indent=1) + "\n").encode()
                tar.addfile(_info(arcname, tarfile.REGTYPE, len(data), stamp), io.BytesIO(data))
            else:
                with open(path, "rb") as handle:
                    info = _info(arcname, tarfile.REGTYPE, path.stat().st_size, stamp)
                    tar.addfile(info, handle)


def _info(name: str, kind: bytes, size: int, stamp: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = stamp
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    doc = read_json(path / "reference.json")
    inputs, outputs = doc.get("inputs"), doc.get("outputs")
    if not inputs or not outputs or len(inputs) != len(outputs):
        raise ConfigError(
            f"reference.json of bundle {path} has no reference rows; rerun 'rootml train'"
        )
    x = np.array([[np.nan if v is None else v for v in row] for row in inputs], dtype=np.float32)
    y = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    return x, y


def _local_outputs(bundle_path: Path, x: np.ndarray) -> np.ndarray:
    session = load_bundle(bundle_path).onnx_session()
    return np.asarray(session.run(None, {session.get_inputs()[0].name: x})[0], dtype=np.float64)


def publish(
    bundle: str | Path,
    url: str,
    out: str | Path,
    *,
    name: str | None = None,
    token: str | None = None,
    form: bool = False,
    tolerance: float = TOLERANCE,
    timeout: float = 120.0,
    wait: float = 0.0,
) -> dict:
    """Upload ``bundle`` to ``url``, check it is listed and serves the reference outputs
    within ``tolerance``, and write the receipt to ``out`` (only when every check passed).
    ``wait``: seconds a server that refuses connections is given to come up (the workflow's
    embedded server may still be starting when publish runs)."""
    started = _now()
    clock = time.perf_counter()
    b = load_bundle(bundle)
    x, expected = _reference(b.path)
    name = check_name(name or str(b.params.get("name", "")))
    features = b.params.get("features")
    client = Client(url, token, timeout=timeout)
    client.wait_until_up(wait)
    kind = client.kind()
    if form and kind != ROOTML:
        raise ConfigError("--form uploads need rootml serve; the Go TFaaS takes the tarball body")
    with tempfile.TemporaryDirectory(prefix="rootml-publish-") as tmp:
        tarball = Path(tmp) / f"{name}.tar.gz"
        with open(tarball, "wb") as handle:
            pack_bundle(b.path, name, handle)
        digest, size = sha256_file(tarball), tarball.stat().st_size
        reply = client.upload(tarball, form=form, name=name)
    uploaded = _now()
    if kind == ROOTML and (not isinstance(reply, dict) or reply.get("sha256") != digest):
        raise PublishError(
            f"the server received other bytes than were sent (sha256 {digest[:12]}..., server "
            f"says {str((reply or {}).get('sha256'))[:12]}...); check any proxy in between"
        )
    listed = next((m for m in client.models() if m.get("name") == name), None)
    if listed is None:
        raise PublishError(f"the upload succeeded but GET /models does not list {name!r}")
    digest_ok = digest_of(listed) in (None, digest_of(b.params))
    if not digest_ok:
        raise PublishError(
            f"GET /models lists {name!r} with layout digest {digest_of(listed)!r}, "
            f"not this bundle's {digest_of(b.params)!r}: another upload replaced it"
        )
    missing = "sent as null (a missing object)"
    if kind != ROOTML and np.isnan(x).any():
        x = np.nan_to_num(x, nan=0.0)
        expected = _local_outputs(b.path, x).reshape(len(x), -1)
        missing = "sent as 0 (the Go TFaaS reads null as 0), compared with model.onnx locally"
    served = client.predict(name, x, features)
    if served.shape != expected.shape:
        raise PublishError(
            f"the server answered outputs of shape {served.shape}, the bundle expects "
            f"{expected.shape}"
        )
    diff = np.abs(served - expected)
    worst = float(np.nanmax(diff)) if diff.size else 0.0
    if not np.isfinite(diff).all() or worst > tolerance:
        row = int(np.nanargmax(diff.max(axis=1))) if np.isfinite(diff).any() else 0
        raise PublishError(
            f"model {name!r} at {url} serves other predictions than the bundle: max difference "
            f"{worst:.3g} > {tolerance} (row {row}: served {served[row].tolist()}, expected "
            f"{expected[row].tolist()}); the upload may have been replaced, or the server "
            "runs a different graph"
        )
    receipt = {
        "url": client.url,
        "server": kind,
        "name": name,
        "bundle": str(b.path),
        "layout_digest": digest_of(b.params),
        "tarball": {"sha256": digest, "bytes": size, "form": form},
        "server_reply": reply if isinstance(reply, dict) else None,
        "reference": {
            "rows": len(x),
            "max_abs_difference": worst,
            "tolerance": tolerance,
            "missing_values": missing,
        },
        "started": started,
        "uploaded": uploaded,
        "verified": _now(),
        "seconds": round(time.perf_counter() - clock, 3),
        "rootml_version": __version__,
    }
    write_json(out, receipt)
    log.info(
        "publish: %s -> %s/%s (%s), %d reference rows within %.2g -> %s",
        b.path,
        client.url,
        name,
        kind,
        len(x),
        worst,
        out,
    )
    return receipt


# ------------------------------------------------------------------ predict through a server


def predict_remote(
    bundle_path: str | Path,
    files: Sequence[str],
    url: str,
    *,
    name: str | None = None,
    token: str | None = None,
    redirector: str | None = None,
    step: int = 100_000,
) -> list[dict]:
    """Like :func:`rootml.scoring.predict_files`, but the served model scores the rows: the
    bundle gives the layout, the server the predictions. The server's model must carry the
    bundle's layout digest."""
    from .scoring import score_files

    b = load_bundle(bundle_path)
    layout = b.layout
    name = check_name(name or str(b.params.get("name", "")))
    client = Client(url, token)
    served_digest = digest_of(client.params(name))
    if served_digest not in (None, layout["digest"]):
        raise PublishError(
            f"model {name!r} at {url} was trained on other specs (digest {served_digest[:12]}..., "
            f"bundle {layout['digest'][:12]}...); publish this bundle or pass --name"
        )
    if client.kind() != ROOTML:
        log.warning("the Go TFaaS takes one row per request and reads null as 0: slow and lossy")

    def served(raw: np.ndarray) -> np.ndarray:
        if client.kind() == ROOTML:
            return client.infer(name, raw)
        return client.predict(name, raw, b.params.get("features"))

    return score_files(layout, files, served, redirector=redirector, step=step)
