"""The model store: one folder per model name, loaded models in an LRU cache.

Layout of ``--models DIR``::

    DIR/<name>                     -> .versions/<name>.<id>   (symlink; or a folder put there by hand)
    DIR/.versions/<name>.<id>/     one complete bundle per upload
    DIR/.staging/<id>/             an upload being unpacked and checked
    DIR/.current                   the default model (last upload or POST /params)
    DIR/.lock                      held (flock) while a name is switched or removed

An upload is unpacked into ``.staging``, checked (params.json, the layout's digest, and the
model actually loading), renamed into ``.versions`` and published by replacing the symlink
with ``os.replace``: a reader sees the old version or the new one, never a gap. The old
version is removed afterwards. Because the symlink target names the version, every request
compares it with the cached model's (one ``readlink``), so a re-upload or a delete is seen at
once, by every worker process, without any message between them.

Loading is per name under an :class:`asyncio.Lock` and runs in a worker thread: concurrent
first requests load a model once and never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import anyio.to_thread

from ..client import is_model_name
from ..exceptions import RequestError, RootmlError, format_closest
from .archive import check_model_name
from .backends import LoadedModel, Missing, load_model, read_params, tfaas_params

log = logging.getLogger(__name__)

_HOST = "".join(c if c.isalnum() else "_" for c in socket.gethostname())


def _writer_gone(name: str) -> bool:
    """Whether staging entry ``name`` (HOST-PID-ID) was written by a process of this host
    that no longer runs. Entries of other hosts (a shared store) are left to the hour rule."""
    parts = name.split("-")
    if len(parts) != 3 or parts[0] != _HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


VERSIONS = ".versions"
STAGING = ".staging"
CURRENT = ".current"
STALE_SECONDS = 3600.0


# ------------------------------------------------------------------ the store


class ModelStore:
    """Models under ``root``: versions on disk, loaded sessions in an LRU cache."""

    def __init__(
        self,
        root: str | Path,
        *,
        cache_size: int = 10,
        threads: int = 1,
        run_hooks: bool = False,
    ) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / VERSIONS).mkdir(exist_ok=True)
        self._root = str(self.root)
        self.cache_size = max(1, cache_size)
        self.threads = threads
        self.run_hooks = run_hooks  # ServerConfig.run_bundle_hooks
        self.loads = 0
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._mutex = threading.Lock()

    # -------------------------------------------------------------- reading

    def version(self, name: str) -> str | None:
        """The live version of ``name`` (its symlink target, or the folder's inode and time),
        ``None`` when there is no such model."""
        # called on every request: plain os calls on a string path, no pathlib objects
        path = f"{self._root}/{name}"
        try:
            return os.readlink(path)  # noqa: PTH115
        except FileNotFoundError:
            return None
        except OSError:
            pass  # a folder put there by hand
        try:
            st = os.stat(path)  # noqa: PTH116
        except OSError:
            return None
        return f"{st.st_ino}:{st.st_mtime_ns}" if stat.S_ISDIR(st.st_mode) else None

    def folder(self, name: str) -> Path:
        """The live folder of ``name``, which must stay inside the store."""
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise RequestError(404, f"no model named {name!r}")
        return path

    def names(self) -> list[str]:
        out = []
        with os.scandir(self._root) as entries:
            for entry in entries:
                if is_model_name(entry.name) and self.version(entry.name) is not None:
                    out.append(entry.name)
        return sorted(out)

    def listing(self) -> list[dict]:
        """TFaaS-shaped params of every model; a folder without valid params is skipped."""
        out = []
        for name in self.names():
            try:
                path = self.folder(name)
                params = read_params(path, name)
                out.append(tfaas_params(params, path.stat().st_mtime))
            except (RequestError, OSError) as err:
                log.warning("model folder %s skipped in /models: %s", name, err)
        return out

    def params_bytes(self, name: str) -> bytes:
        check_model_name(name)
        if self.version(name) is None:
            raise self._not_found(name)
        try:
            return (self.folder(name) / "params.json").read_bytes()
        except FileNotFoundError:
            raise self._not_found(name) from None

    def cached(self) -> list[str]:
        return list(self._cache)

    def _not_found(self, name: str) -> RequestError:
        return RequestError(
            404,
            f"no model named {name!r} ({format_closest(name, self.names(), 3)}); "
            "GET /models lists them",
        )

    async def get(self, name: object) -> LoadedModel:
        """The loaded model ``name``, loading it (once) if needed."""
        name = check_model_name(name)
        version = self.version(name)
        model = self._cache.get(name)
        if model is not None and model.version == version:
            self._cache.move_to_end(name)
            return model
        if version is None:
            self._cache.pop(name, None)
            raise self._not_found(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            for _ in range(3):
                version = self.version(name)
                if version is None:
                    self._cache.pop(name, None)
                    raise self._not_found(name)
                model = self._cache.get(name)
                if model is not None and model.version == version:
                    return model
                try:
                    model = await anyio.to_thread.run_sync(self._load, name, version)
                except Missing:
                    continue  # replaced or deleted while loading: look again
                self.remember(model)
                return model
        raise RequestError(409, f"model {name!r} keeps changing; retry the request")

    def _load(self, name: str, version: str) -> LoadedModel:
        """Load ``version`` of ``name``; :class:`Missing` when it was replaced meanwhile."""
        self.loads += 1
        started = time.perf_counter()
        path = self.root / version if version.startswith(VERSIONS + "/") else self.folder(name)
        try:
            model = self._with_hook(load_model(path, name, version, self.threads))
        except (OSError, RootmlError) as err:
            if self.version(name) != version:
                raise Missing(name) from None  # a re-upload or delete removed these files
            raise RequestError(
                503, f"model {name!r} is in the store but cannot be loaded: {err}"
            ) from None
        log.info(
            "loaded model %s (%s, %d features) in %.0f ms",
            name,
            model.backend,
            model.dim,
            1e3 * (time.perf_counter() - started),
        )
        return model

    def _with_hook(self, model: LoadedModel) -> LoadedModel:
        """``model`` with its layout's preprocessing hook loaded, when this server runs them
        (a hook that does not load is the upload's error, as a bundle that does not load)."""
        doc = (model.layout or {}).get("preprocessing")
        if self.run_hooks and doc:
            from ..hooks import CHUNK_HOOK, RECORD_HOOK, load_hook

            function = load_hook(doc, f"{model.name}'s {doc.get('file', 'preprocessing')}")
            kind = CHUNK_HOOK if function.__name__ == CHUNK_HOOK else RECORD_HOOK
            model.hook = (kind, function)
        return model

    def remember(self, model: LoadedModel) -> None:
        self._cache[model.name] = model
        self._cache.move_to_end(model.name)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    # -------------------------------------------------------------- the default model

    def current(self) -> str | None:
        try:
            name = (self.root / CURRENT).read_text("utf-8").strip()
        except OSError:
            return None
        return name if is_model_name(name) and self.version(name) else None

    def set_current(self, name: str) -> None:
        tmp = self.root / f"{CURRENT}.{uuid.uuid4().hex}"
        tmp.write_text(name + "\n", "utf-8")
        tmp.replace(self.root / CURRENT)

    # -------------------------------------------------------------- writing

    def staging(self) -> Path:
        """A fresh, not yet existing folder in the store for unpacking an upload."""
        base = self.root / STAGING
        base.mkdir(exist_ok=True)
        # named by its writer, so that a restarted server knows which uploads were cut short
        return base / f"{_HOST}-{os.getpid()}-{uuid.uuid4().hex}"

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        import fcntl

        with self._mutex, open(self.root / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def install(self, unpacked: Path, name: str) -> LoadedModel:
        """Check the bundle in ``unpacked`` (a staging folder) and make it model ``name``'s
        live version. Blocking: call it from a worker thread."""
        vid = uuid.uuid4().hex[:12]
        relative = f"{VERSIONS}/{name}.{vid}"
        try:
            model = self._with_hook(load_model(unpacked, name, relative, self.threads))
            target = self.root / relative
            unpacked.rename(target)
        except BaseException:
            shutil.rmtree(unpacked, ignore_errors=True)
            raise
        model.path = target
        link = self.root / f".link.{vid}"
        link.symlink_to(relative)
        old: Path | None = None
        with self._exclusive():
            live = self.root / name
            if live.is_symlink():
                old = self.root / live.readlink()
            elif live.is_dir():  # put there by hand: move it aside (a short gap for readers)
                old = self.root / VERSIONS / f"{name}.{vid}.old"
                live.rename(old)
            link.replace(live)
            self.set_current(name)
        if old is not None and old.resolve().is_relative_to(self.root / VERSIONS):
            shutil.rmtree(old, ignore_errors=True)
        return model

    def delete(self, name: str) -> None:
        """Remove model ``name`` (404 when there is none). Blocking."""
        check_model_name(name)
        with self._exclusive():
            live = self.root / name
            if live.is_symlink():
                old = self.root / live.readlink()
                live.unlink()
            elif live.is_dir():
                old = self.root / VERSIONS / f"{name}.{uuid.uuid4().hex[:12]}.deleted"
                live.rename(old)
            else:
                raise self._not_found(name)
            if self.current() is None:
                with contextlib.suppress(FileNotFoundError):
                    (self.root / CURRENT).unlink()
        if old.resolve().is_relative_to(self.root / VERSIONS):
            shutil.rmtree(old, ignore_errors=True)

    def clean(self) -> None:
        """Remove leftovers of interrupted uploads and unreferenced versions (an hour old)."""
        now = time.time()
        live = {
            str((self.root / n).readlink()) for n in self.names() if (self.root / n).is_symlink()
        }
        for folder, prefix in ((self.root / STAGING, ""), (self.root / VERSIONS, VERSIONS + "/")):
            if not folder.is_dir():
                continue
            for entry in folder.iterdir():
                orphan = folder.name == STAGING and _writer_gone(entry.name)
                stale = orphan or now - entry.lstat().st_mtime > STALE_SECONDS
                if stale and prefix + entry.name not in live:
                    if orphan:
                        size = sum(p.lstat().st_size for p in entry.rglob("*"))
                        log.warning(
                            "removed %s: an upload its server (pid %s) did not finish (%.1f MiB)",
                            entry,
                            entry.name.split("-")[-2],
                            size / 2**20,
                        )
                    shutil.rmtree(entry, ignore_errors=True)
        for entry in self.root.glob(".link.*"):
            if now - entry.lstat().st_mtime > STALE_SECONDS:
                entry.unlink(missing_ok=True)

    async def preload(self) -> None:
        """Load the most recently changed models (up to the cache size) at start-up."""
        names = sorted(self.names(), key=lambda n: -(self.root / n).lstat().st_mtime)[
            : self.cache_size
        ]
        for name in names:
            try:
                await self.get(name)
            except RequestError as err:
                log.warning("model %s is in the store but cannot be served: %s", name, err)
