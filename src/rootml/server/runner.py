"""Running the server: ``rootml serve`` (uvicorn, one or several worker processes) and an
embedded server in a background thread (the publish step's default target, and the tests').
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import urllib.request
from types import TracebackType
from typing import TYPE_CHECKING

from ..exceptions import ConfigError
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
        "rootml serve: http://%s:%d, models in %s, %d worker(s)",
        config.host,
        config.port,
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


class EmbeddedServer:
    """The server in a daemon thread on ``config.host`` (port 0: a free one), for a step
    that needs a TFaaS endpoint for a moment, and for tests::

        with EmbeddedServer(ServerConfig(models=tmp, port=0)) as server:
            urllib.request.urlopen(server.url + "/models")
    """

    def __init__(self, config: ServerConfig, *, timeout: float = 30.0) -> None:
        self.config = config
        self.timeout = timeout
        self.url = ""
        self._server = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        import uvicorn

        from .app import create_app

        token = load_token(self.config.token_file) if self.config.token_file else None
        check_bind(self.config.host, token)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.config.host, self.config.port))
        host, port = sock.getsockname()[:2]
        self.url = f"http://{host}:{port}"
        options = _uvicorn_options(self.config)
        options["log_level"] = "warning"
        uv_config = uvicorn.Config(create_app(self.config), loop="asyncio", **options)
        self._server = server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="rootml-serve", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + self.timeout
        while not server.started:
            if not self._thread.is_alive():
                sock.close()
                raise ConfigError(f"the embedded server on {self.url} failed to start; see the log")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"the embedded server on {self.url} did not start in time")
            time.sleep(0.02)
        with urllib.request.urlopen(self.url + "/v2/health/ready", timeout=5) as reply:
            if not json.load(reply).get("ready"):
                raise ConfigError(f"the embedded server on {self.url} is not ready")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=self.timeout)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
