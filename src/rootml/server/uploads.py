"""The routes that change the model store: ``/upload``, ``/delete``, ``POST /params``, and
the two that read it, ``/models`` and ``GET /params/{name}``.

Every change needs the bearer token when one is configured. An upload is spooled (memory,
then the system temporary folder) while its size is counted, scanned member by member, and
only then unpacked into the store's staging folder and installed (see :mod:`.store`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import anyio.to_thread
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from ..client import is_model_name
from ..exceptions import RequestError
from . import convert, protocols
from .archive import (
    ArchiveLimits,
    check_model_name,
    decode_base64,
    extract_tarball,
    is_archive,
    scan_tarball,
)
from .auth import require_token
from .bodies import JSONResponse, chunks, limited, read_json
from .config import ServerConfig
from .store import ModelStore

log = logging.getLogger(__name__)

SPOOL_IN_MEMORY = 8 << 20
FORM_FIELD_BYTES = 1 << 20
TARBALL_FIELDS = ("bundle", "file", "tarball", "model")
#: every field an upload form may have: the tarball's, the name, and TFaaS's params and labels
#: (its client sends them beside the model; a bundle carries its own, so they are not read)
FORM_FIELDS = (*TARBALL_FIELDS, "name", "params", "labels")
SMALL_BODY = 1 << 20


def _mutation(request: Request) -> None:
    require_token(request.app.state.token, request.headers.get("authorization"))


def _spool() -> tempfile.SpooledTemporaryFile:
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)


async def upload(request: Request) -> Response:
    """TFaaS ``/upload``: a multipart form (tarball in a file field, optional ``name``) or the
    tarball as the body (gzip by ``Content-Encoding`` or by its magic bytes)."""
    _mutation(request)
    outcome = "refused"
    try:
        async with request.app.state.upload_slots:
            reply = await _upload(request)
        outcome = "installed"
        return reply
    finally:
        request.app.state.metrics.uploads.labels(outcome).inc()


async def _upload(request: Request) -> Response:
    config: ServerConfig = request.app.state.config
    limit = config.max_upload_bytes
    ctype = request.headers.get("content-type", "")
    started = time.perf_counter()
    if "multipart/form-data" in ctype:
        wrapped = Request(request.scope, limited(request.receive, limit))
        async with wrapped.form(max_files=8, max_fields=32, max_part_size=FORM_FIELD_BYTES) as form:
            unknown = sorted(set(form) - set(FORM_FIELDS))
            if unknown:
                raise RequestError(
                    400,
                    f"the form has the unknown field {unknown[0][:64]!r}; an upload form takes "
                    f"{', '.join(FORM_FIELDS)}",
                )
            part = next(
                (form[f] for f in TARBALL_FIELDS if isinstance(form.get(f), UploadFile)), None
            )
            if part is None:
                raise RequestError(
                    400,
                    "the form has no bundle tarball: send it as the file field 'model' (or "
                    "'bundle'), with an optional 'name' field, or POST the tarball as the body",
                )
            rename = form.get("name") or None
            source = part.file
            if isinstance(form.get("params"), UploadFile) and not is_archive(source):
                return await _upload_frozen_graph(request, form, rename, started)
            spool = None
            if request.headers.get("content-encoding", "").lower() == "base64":
                spool = _spool()
                await anyio.to_thread.run_sync(decode_base64, source, spool, limit)
                source = spool
            digest = await anyio.to_thread.run_sync(_sha256, source)
            try:
                result = await _install(request, source, None, rename, digest)
            finally:
                if spool is not None:
                    spool.close()
    else:
        encoding = request.headers.get("content-encoding", "").lower().strip()
        if encoding not in ("", "identity", "gzip", "x-gzip"):
            raise RequestError(
                415, f"Content-Encoding {encoding[:32]!r} is not supported; use gzip"
            )
        gzipped = True if encoding in ("gzip", "x-gzip") else None
        rename = request.query_params.get("name") or None
        with _spool() as spool:
            digest = hashlib.sha256()
            async for chunk in chunks(request, limit):
                digest.update(chunk)
                spool.write(chunk)
            result = await _install(request, spool, gzipped, rename, digest.hexdigest())
    log.info(
        "upload: model %s (%d files, %d bytes unpacked) in %.2f s",
        result["name"],
        result["files"],
        result["unpacked_bytes"],
        time.perf_counter() - started,
    )
    return JSONResponse(result)


async def _upload_frozen_graph(request: Request, form, rename: object, started: float) -> Response:
    """TFaaS's classic upload: ``-F name=... -F params=@params.json -F model=@model.pb
    -F labels=@labels.txt`` with a TF1 frozen GraphDef: converted to ONNX (or refused)."""
    store: ModelStore = request.app.state.store
    params = await anyio.to_thread.run_sync(form["params"].file.read)
    try:
        doc = json.loads(params)
    except ValueError as err:
        raise RequestError(400, f"the form's params file is not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "the form's params file must hold a JSON object")
    name = check_model_name(rename or doc.get("name") or "", "the 'name' field")
    doc["name"] = name
    staging = store.staging()
    staging.mkdir(parents=True)
    try:
        graph = form["model"] if isinstance(form.get("model"), UploadFile) else None
        if graph is None:
            raise RequestError(400, "the form's frozen graph goes in the file field 'model'")
        digest = await anyio.to_thread.run_sync(
            _copy_to, graph.file, staging / convert.FROZEN_GRAPH
        )
        (staging / "params.json").write_text(json.dumps(doc, indent=1) + "\n", "utf-8")
        labels = form.get("labels")
        if isinstance(labels, UploadFile):
            await anyio.to_thread.run_sync(_copy_to, labels.file, staging / "labels.txt")
        files = len(list(staging.iterdir()))
        size = sum(p.stat().st_size for p in staging.iterdir())
        model = await _convert_and_install(store, staging, name)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    result = _installed(store, model, files, size, digest)
    log.info(
        "upload: frozen graph %s installed (%s) in %.2f s",
        name,
        result["backend"],
        time.perf_counter() - started,
    )
    return JSONResponse(result)


def _copy_to(handle, path: Path) -> str:
    """Write ``handle`` to ``path``; its sha256."""
    handle.seek(0)
    digest = hashlib.sha256()
    with open(path, "wb") as out:
        while block := handle.read(1 << 20):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _sha256(handle) -> str:
    handle.seek(0)
    digest = hashlib.sha256()
    while block := handle.read(1 << 20):
        digest.update(block)
    return digest.hexdigest()


async def _install(
    request: Request, spool, gzipped: bool | None, rename: object, digest: str
) -> dict:
    store: ModelStore = request.app.state.store
    limits: ArchiveLimits = request.app.state.config.archive
    if rename is not None:
        rename = check_model_name(rename, "the 'name' field")
    # every member is checked before anything is written into the store
    summary = await anyio.to_thread.run_sync(
        lambda: scan_tarball(spool, limits, gzipped=gzipped, rename=rename)
    )
    staging = store.staging()
    try:
        await anyio.to_thread.run_sync(
            lambda: extract_tarball(spool, staging, limits, gzipped=gzipped, rename=rename)
        )
        name = await anyio.to_thread.run_sync(_settle_name, staging, rename, summary.top)
        model = await _convert_and_install(store, staging, name)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return _installed(store, model, summary.files, summary.unpacked_bytes, digest)


def _installed(store: ModelStore, model, files: int, unpacked: int, digest: str) -> dict:
    store.forget(model.name)
    store.remember(model)
    out = {
        "name": model.name,
        "version": model.version.rsplit(".", 1)[-1],
        "backend": model.backend,
        "features": model.dim,
        "files": files,
        "unpacked_bytes": unpacked,
        "sha256": digest,
    }
    record = model.path / convert.RECORD
    if record.exists():
        out["converted"] = json.loads(record.read_text("utf-8"))
    return out


async def _convert_and_install(store: ModelStore, staging: Path, name: str):
    """Install ``staging`` as ``name``, after converting a model without ``model.onnx`` to it
    when the conversion is exact (:mod:`.convert`); one that does not convert is served
    through TensorFlow if TensorFlow can load it, else refused with the reason."""
    if convert.needs_conversion(staging) is not None:
        try:
            record = await anyio.to_thread.run_sync(convert.convert_in_child, staging)
            log.info("upload: model %s converted to ONNX (%s)", name, record)
        except convert.NotConverted as err:
            log.warning("upload: model %s is not converted to ONNX: %s", name, err)
    return await anyio.to_thread.run_sync(store.install, staging, name)


def _settle_name(staging: Path, given: str | None, top: str) -> str:
    """The uploaded model's name, written into its params.json: the name the client gave (the
    ``name`` form field or ``?name=``; TFaaS clients expect it to win), else the name
    params.json gives when it is a valid one (so ``tar czf b.tgz -C run/train bundle`` is
    model ``rootml_sample``, not ``bundle``), else the tarball's top folder."""
    path = staging / "params.json"
    try:
        params = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return given or top  # loading the bundle says what is wrong with it
    if not isinstance(params, dict):
        return given or top
    stated = params.get("name")
    name = given or (stated if isinstance(stated, str) and is_model_name(stated) else top)
    if stated != name:
        log.info("upload: params.json named %r; stored as model %r", stated, name)
        params["name"] = name
        path.write_text(json.dumps(params, indent=1) + "\n", "utf-8")
    return name


async def delete(request: Request) -> Response:
    """TFaaS ``DELETE /delete`` (form field ``model``, or ``?model=``) and ``/delete/{name}``."""
    _mutation(request)
    name = request.path_params.get("name")
    if name is None:
        name = request.query_params.get("model")
    if name is None and "form" in request.headers.get("content-type", ""):
        wrapped = Request(request.scope, limited(request.receive, SMALL_BODY))
        async with wrapped.form(max_files=0, max_fields=8, max_part_size=4096) as form:
            unknown = sorted(set(form) - {"model"})
            if unknown:
                raise RequestError(
                    400, f"the form has the unknown field {unknown[0][:64]!r}; send 'model' only"
                )
            value = form.get("model")
            name = value if isinstance(value, str) else None
    if not name:
        raise RequestError(400, "no model name is provided: send the form field 'model'")
    store: ModelStore = request.app.state.store
    name = check_model_name(name)
    await anyio.to_thread.run_sync(store.delete, name)
    store.forget(name)
    log.info("delete: model %s", name)
    return JSONResponse({"deleted": name})


async def post_params(request: Request) -> Response:
    """TFaaS ``POST /params``: make the named model the default for bodies without 'model'."""
    _mutation(request)
    doc = protocols.object_of(await read_json(request, SMALL_BODY))
    store: ModelStore = request.app.state.store
    model = await store.get(doc.get("name"))
    store.set_current(model.name)
    return JSONResponse({"current": model.name})


async def get_params(request: Request) -> Response:
    store: ModelStore = request.app.state.store
    return Response(store.params_bytes(request.path_params["name"]), media_type="application/json")


async def models(request: Request) -> Response:
    store: ModelStore = request.app.state.store
    return JSONResponse(await anyio.to_thread.run_sync(store.listing))
