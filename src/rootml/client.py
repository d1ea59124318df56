"""The HTTP client every command uses to talk to a TFaaS or ``rootml serve`` server, and the
two rules both ends share: which model names a server takes, and which hosts are this
machine (the client bypasses proxies for them; the server listens on nothing else without a
token).

:class:`Client` speaks TFaaS's routes and rootml's (KServe V2 for binary tensors when the
server has them), never follows a redirect (a token must not travel to another host), and
turns every failure into a :class:`~rootml.exceptions.PublishError` that names the URL.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from http.client import HTTPException
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from . import __version__
from .exceptions import ConfigError, PublishError

log = logging.getLogger(__name__)

#: the model names a server takes (TFaaS's rule): they become folder names and URL parts
MODEL_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
#: what :meth:`Client.kind` finds at the other end
ROOTML, TFAAS = "rootml", "tfaas"
#: rows per prediction request
BATCH = 10_000


def is_model_name(name: object) -> bool:
    """True for 1 to 64 letters, digits or underscores (:data:`MODEL_NAME`)."""
    return isinstance(name, str) and MODEL_NAME.fullmatch(name) is not None


def check_name(name: str) -> str:
    """``name`` if a server takes it as a model name, else what to pass instead."""
    if not is_model_name(name):
        raise ConfigError(
            f"model name {name!r} is not allowed: TFaaS takes 1 to 64 letters, digits or "
            "underscores; pass --name"
        )
    return name


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1`` (brackets allowed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _ConnectionCut(PublishError):
    """The server closed the connection while the request body was still being sent."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002
        raise PublishError(
            f"{req.get_method()} {req.full_url} was redirected to {newurl} ({code}); "
            "give the final URL (redirects are not followed, so a token is not sent elsewhere)"
        )


class Client:
    """A TFaaS / rootml serve endpoint: ``url`` is the base (``http://host:8083`` or with a
    prefix such as ``/core``), ``token`` goes in ``Authorization: Bearer`` when given."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 120.0) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"server URL {url!r} must look like http://host:8083")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        handlers: list = [_NoRedirect()]
        if parts.hostname is None or is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))
        elif token and parts.scheme == "http":
            log.warning("sending a token over plain http to %s; use https", parts.hostname)
        self._opener = urllib.request.build_opener(*handlers)
        self._kind: str | None = None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | BinaryIO | None = None,
        headers: dict[str, str] | None = None,
        *,
        ok: Sequence[int] = (200,),
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request; an error status, a refused connection or a timeout is a
        :class:`PublishError` naming the URL and the server's message."""
        url = self.url + path
        headers = dict(headers or {})
        headers.setdefault("User-Agent", f"rootml/{__version__}")
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        try:
            with self._opener.open(req, timeout=self.timeout) as reply:
                status, data = reply.status, reply.read()
                reply_headers = {k.lower(): v for k, v in reply.headers.items()}
        except urllib.error.HTTPError as err:
            status, data = err.code, err.read()
            reply_headers = {k.lower(): v for k, v in err.headers.items()}
            err.close()
        except urllib.error.URLError as err:
            if body is not None and isinstance(err.reason, BrokenPipeError | ConnectionResetError):
                raise _ConnectionCut(
                    f"{method} {url}: the server closed the connection while the body was "
                    f"being sent ({err.reason})"
                ) from None
            raise PublishError(
                f"cannot reach {url}: {err.reason}; is the server running "
                "(rootml serve --models DIR) and the URL right?"
            ) from None
        except (OSError, HTTPException) as err:
            raise PublishError(
                f"{method} {url} failed: {err!r} (the server closed the connection; a body "
                "over its size limit does that)"
            ) from None
        if status not in ok:
            raise PublishError(f"{method} {url} answered {status}: {_message(data)}")
        return status, reply_headers, data

    def json(self, method: str, path: str, doc: Any = None, **kwargs: Any) -> Any:
        body = None if doc is None else json.dumps(doc, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        _, _, data = self.request(method, path, body, headers, **kwargs)
        try:
            return json.loads(data) if data.strip() else None
        except ValueError:
            raise PublishError(
                f"{method} {self.url}{path} did not answer JSON: {data[:200]!r}"
            ) from None

    def wait_until_up(self, seconds: float) -> None:
        """Return once the server accepts a connection, or after ``seconds`` (then the next
        request says what is wrong); said once in the log."""
        deadline = time.monotonic() + seconds
        said = False
        while time.monotonic() < deadline:
            try:
                self.request("GET", "/", ok=range(100, 600))
                return
            except PublishError as err:
                if "cannot reach" not in str(err):
                    return
            if not said:
                log.info("waiting up to %.0f s for the server at %s to come up", seconds, self.url)
                said = True
            time.sleep(0.25)

    def kind(self) -> str:
        """``"rootml"`` for rootml serve, ``"tfaas"`` for a server without ``/v2``."""
        if self._kind is None:
            try:
                doc = self.json("GET", "/v2")
                self._kind = (
                    ROOTML if isinstance(doc, dict) and doc.get("name") == ROOTML else TFAAS
                )
            except PublishError as err:
                if "cannot reach" in str(err) or "failed:" in str(err):
                    raise
                self._kind = TFAAS
        return self._kind

    def upload(self, tarball: str | Path, *, form: bool = False, name: str | None = None) -> Any:
        """Upload a gzip bundle tarball (raw body, or a multipart form). A server that refuses
        the upload before reading it (no token, too large) closes the connection while the
        client is still sending; an empty request then tells which it was."""
        try:
            return self._upload(Path(tarball), form=form, name=name)
        except _ConnectionCut as err:
            self.request("POST", "/upload", b"", {"Content-Type": "application/octet-stream"},
                         ok=(200, 400))  # fmt: skip
            raise PublishError(
                f"{err}; the bundle ({Path(tarball).stat().st_size} bytes) may be over the "
                "server's upload limit (rootml serve --max-upload-mb)"
            ) from None

    def _upload(self, tarball: Path, *, form: bool, name: str | None) -> Any:
        if form:
            boundary = uuid.uuid4().hex
            body = _multipart(boundary, {"name": name} if name else {}, "model", tarball)
            headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
            _, _, data = self.request("POST", "/upload", body, headers)
        else:
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Encoding": "gzip",
                "Content-Length": str(tarball.stat().st_size),
            }
            with open(tarball, "rb") as handle:
                _, _, data = self.request("POST", "/upload", handle, headers)
        try:
            return json.loads(data) if data.strip() else None
        except ValueError:
            return None  # the Go server answers an empty body

    def models(self) -> list[dict]:
        doc = self.json("GET", "/models")
        return doc if isinstance(doc, list) else []  # the Go server says null when empty

    def delete(self, name: str) -> None:
        self.request("DELETE", f"/delete/{check_name(name)}")

    def params(self, name: str) -> dict:
        doc = self.json("GET", f"/params/{check_name(name)}")
        if not isinstance(doc, dict):
            raise PublishError(f"GET /params/{name} did not answer a params object")
        return doc

    def infer(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Outputs ``[n, k]`` through KServe V2 with binary tensors (rootml serve; fast)."""
        rows = np.ascontiguousarray(rows, dtype="<f4")
        meta = self.json("GET", f"/v2/models/{check_name(name)}")
        input_name = meta["inputs"][0]["name"]
        parts = []
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            data = chunk.tobytes()
            head = json.dumps(
                {
                    "inputs": [
                        {
                            "name": input_name,
                            "shape": list(chunk.shape),
                            "datatype": "FP32",
                            "parameters": {"binary_data_size": len(data)},
                        }
                    ],
                    "parameters": {"binary_data_output": True},
                }
            ).encode()
            headers = {
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(len(head)),
            }
            _, reply_headers, body = self.request(
                "POST", f"/v2/models/{check_name(name)}/infer", head + data, headers
            )
            cut = int(reply_headers.get("inference-header-content-length", len(body)))
            out = json.loads(body[:cut])["outputs"][0]
            parts.append(np.frombuffer(body[cut:], dtype="<f4").reshape(out["shape"]))
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros((0, 1))

    def predict(self, name: str, rows: np.ndarray, features: Sequence[str] | None) -> np.ndarray:
        """Outputs ``[n, k]`` for float32 raw rows (NaN: a missing object)."""
        rows = np.asarray(rows, dtype=np.float32)
        keys = list(features) if features is not None else []
        if self.kind() == ROOTML:
            parts = []
            for start in range(0, len(rows), BATCH):
                chunk = rows[start : start + BATCH]
                values = np.where(np.isnan(chunk), None, chunk.astype(np.float64)).tolist()
                doc = self.json("POST", "/json", {"keys": keys, "values": values, "model": name})
                parts.append(np.asarray(doc, dtype=np.float64).reshape(len(chunk), -1))
            return np.concatenate(parts) if parts else np.zeros((0, 1))
        out = []
        for row in np.nan_to_num(rows, nan=0.0).astype(np.float64):
            doc = self.json("POST", "/json", {"keys": keys, "values": row.tolist(), "model": name})
            out.append(np.asarray(doc, dtype=np.float64).reshape(-1))
        return np.array(out)


def _message(data: bytes) -> str:
    try:
        doc = json.loads(data)
        if isinstance(doc, dict) and "error" in doc:
            return str(doc["error"])
    except ValueError:
        pass
    return data[:300].decode("utf-8", "replace").strip() or "(empty body)"


def _multipart(boundary: str, fields: dict[str, str], file_field: str, path: Path) -> bytes:
    chunks = []
    for key, value in fields.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        )
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
        f'filename="{path.name}"\r\nContent-Type: application/gzip\r\n\r\n'.encode()
    )
    chunks.append(path.read_bytes())
    chunks.append(f"\r\n--{boundary}--\r\n".encode())
    return b"".join(chunks)


def token_from_env(variable: str | None) -> str | None:
    """The token in environment variable ``variable`` (``None`` when no variable is named)."""
    if variable is None:
        return None
    token = os.environ.get(variable, "").strip()
    if not token:
        raise ConfigError(f"--token-env names {variable}, but that environment variable is empty")
    return token


# ------------------------------------------------------------------ publish
