"""The ``rootml`` launcher of the warm interpreters (:mod:`.warm`): standard library only, run
as ``python -S``, so it starts in milliseconds.

It hands its command to the warm server for the subcommand (``train`` and ``check-model`` to the
one with TensorFlow, the rest, ``evaluate`` included, to the data one), with its argv, folder,
environment, umask and its standard streams as file descriptors, then waits: the server answers the command's pid
and, when it ends, its exit status, which becomes this process's. Signals sent here are passed
on through the socket (the server may be in another container, where the pid means nothing
here). With no server to hand it to, it execs ``python -m rootml`` like a plain install.

Inside a step image (``ROOTML_IMAGE`` is set there: ``data``, ``train``, ``publish``) every
command goes to a warm container of that same image (:mod:`.warmdocker`): the train image has
two, one with TensorFlow for training, one without for ``features`` and ``evaluate``.
"""

import contextlib
import json
import os
import signal
import socket
import sys

ENV = "ROOTML_WARM"
IMAGE_ENV = "ROOTML_IMAGE"
MODEL_COMMANDS = ("train", "check-model")
#: image -> {subcommand: warm container kind} where an image has more than one
IMAGE_ROUTES = {"train": {"features": "evaluate", "evaluate": "evaluate"}}


def _subcommand(argv):
    return next((a for a in argv if not a.startswith("-")), "")


def _cold(argv):
    os.execv(sys.executable, [sys.executable, "-m", "rootml", *argv])


def _connect(argv):
    folder = os.environ.get(ENV)
    if not folder:
        return None
    command, image = _subcommand(argv), os.environ.get(IMAGE_ENV)
    if image:
        kind = IMAGE_ROUTES.get(image, {}).get(command, image)
    else:
        kind = "model" if command in MODEL_COMMANDS else "data"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(os.path.join(folder, kind + ".sock"))
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask()}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        reply = sock.recv(4096)  # the command's pid; empty if the server went away first
    except OSError:
        sock.close()
        return None
    if not reply:
        sock.close()
        return None
    return sock, json.loads(reply)["pid"]


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def main(argv):
    connected = _connect(argv)
    if connected is None:
        _cold(argv)
    sock, _pid = connected

    def forward(signum, _frame):
        with contextlib.suppress(OSError):
            sock.send(json.dumps({"signal": signum}).encode())

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, forward)
    while True:
        try:
            reply = sock.recv(4096)
            break
        except InterruptedError:
            continue
    if not reply:
        sys.stderr.write("rootml: the warm interpreter running this command went away\n")
        return 1
    return json.loads(reply)["status"]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
