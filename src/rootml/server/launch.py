"""Starting the server: :func:`serve` is ``rootml serve`` (uvicorn, one or several worker
processes); :class:`EmbeddedServer` runs it in a child process on this machine, for a command
that needs a TFaaS endpoint for a while (``rootml run``'s publish step) and for the tests.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from ..exceptions import ConfigError, PublishError, ServerError
from .auth import check_bind, load_token
from .config import ServerConfig

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


def _uvicorn_options(config: ServerConfig) -> dict:
    return {
        "log_level": config.log_level,
        "access_log": config.access_log,
        "server_header": False,
        "timeout_keep_alive": 30,
        "backlog": 4096,
    }


def serve(config: ServerConfig) -> None:
    """Serve until interrupted. Refuses a non-loopback address without a token."""
    import uvicorn

    token = load_token(config.token_file) if config.token_file else None
    check_bind(config.host, token)
    config.models.mkdir(parents=True, exist_ok=True)
    if not os.access(config.models, os.W_OK):
        raise ConfigError(f"the model store {config.models} is not writable")
    log.info(
        "rootml serve: http://%s:%d%s, models in %s, %d worker(s)",
        config.host,
        config.port,
        f" and gRPC on port {config.grpc_port}" if config.grpc_port is not None else "",
        config.models,
        config.workers,
    )
    if config.workers == 1:
        from .app import create_app

        uvicorn.run(
            create_app(config), host=config.host, port=config.port, **_uvicorn_options(config)
        )
        return
    os.environ["ROOTML_SERVE_CONFIG"] = config.to_json()
    uvicorn.run(
        "rootml.server.app:app_from_env",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        **_uvicorn_options(config),
    )


def free_port(host: str = "127.0.0.1", wanted: int = 0) -> int:
    """``wanted`` if it is free on ``host``, else one the system picks."""
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket() as s:
            # as uvicorn binds: a port whose last connections are in TIME_WAIT is free
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise ServerError(f"no free TCP port on {host} for the embedded server")


def serve_from_env() -> None:
    """The embedded server's child process: :func:`serve` with the configuration of
    ``ROOTML_SERVE_CONFIG`` (JSON: paths and limits, no secrets)."""
    config = ServerConfig.from_json(os.environ["ROOTML_SERVE_CONFIG"])
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    serve(config)


class EmbeddedServer:
    """``rootml serve`` in a child process, one worker, on ``config.host`` (a loopback
    address unless the config has a token file) and ``config.port`` (0: a free one)::

        with EmbeddedServer(ServerConfig(models=tmp, port=0)) as server:
            urllib.request.urlopen(server.url + "/models")

    :meth:`start` returns at once and :meth:`wait` blocks until it answers, so a caller can
    start it early and do other work meanwhile (``rootml run`` starts it while the workflow
    runs; publish needs it many seconds later); :meth:`check` only says whether it died.
    Its output goes to ``log_path`` (default: discarded). ``nice`` lowers its CPU priority
    while it starts beside other work."""

    def __init__(
        self,
        config: ServerConfig,
        log_path: Path | None = None,
        *,
        nice: int = 0,
        timeout: float = 60.0,
    ) -> None:
        grpc_port = None if config.grpc_port is None else free_port(config.host, config.grpc_port)
        self.config = replace(
            config, workers=1, port=free_port(config.host, config.port), grpc_port=grpc_port
        )
        self.log_path = log_path
        self.nice = nice
        self.timeout = timeout
        self.url = f"http://{self.config.host}:{self.config.port}"
        #: host:port of the gRPC endpoint (``config.grpc_port`` set), as gRPC clients take it
        self.grpc_target = f"{self.config.host}:{grpc_port}" if grpc_port is not None else None
        self.proc: subprocess.Popen | None = None
        self.stopping = False  # asked to stop: its exit is no longer an error

    def start(self) -> Self:
        if self.proc is not None:
            return self
        token = load_token(self.config.token_file) if self.config.token_file else None
        check_bind(self.config.host, token)
        env = {**os.environ, "ROOTML_SERVE_CONFIG": self.config.to_json()}
        cmd = [sys.executable, "-c", "from rootml.server.launch import serve_from_env as s; s()"]
        with open(self.log_path or os.devnull, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        if self.nice:
            with suppress(OSError):  # where lowering it is not allowed, leave it
                priority = os.getpriority(os.PRIO_PROCESS, self.proc.pid)
                os.setpriority(os.PRIO_PROCESS, self.proc.pid, priority + self.nice)
        return self

    def _where(self) -> str:
        return f"its log: {self.log_path}" if self.log_path else "run 'rootml serve' to see why"

    def check(self) -> None:
        """Raise :class:`~rootml.exceptions.ServerError` if it exited unasked."""
        if self.proc is not None and not self.stopping and self.proc.poll() is not None:
            raise ServerError(
                f"the embedded server on {self.url} exited (status {self.proc.returncode}); "
                + self._where()
            )

    def wait(self) -> Self:
        """Start it if need be and block until it answers ``/v2/health/ready``."""
        from ..client import Client

        self.start()
        client = Client(self.url, timeout=2)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                if client.json("GET", "/v2/health/ready").get("ready"):
                    return self
            except PublishError:
                pass
            self.check()
            if time.monotonic() > deadline:
                raise ServerError(
                    f"the embedded server on {self.url} did not answer in "
                    f"{self.timeout:.0f} s; " + self._where()
                )
            time.sleep(0.05)

    def terminate(self) -> None:
        """Ask it to stop (:meth:`stop` waits): its shutdown overlaps what is left to do."""
        if self.proc is not None and self.proc.poll() is None:
            self.stopping = True
            self.proc.terminate()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Self:
        try:
            return self.wait()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
