"""Uploaded tarballs treated as hostile (:mod:`rootml.server.archive`): bad members and
gzip bombs rejected before anything is written, broken uploads, and model names."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="needs TensorFlow"),
]

from rootml.server import ArchiveLimits
from rootml.server import uploads as uploads_module

from .helpers import make_client, store_snapshot, tarball


def hostile(members: list[tuple[str, bytes | str | None, bytes]], *, gz: bool = True) -> bytes:
    """A tarball from (name, type, data) triples; type is a tarfile type or None for a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            info.type = kind or tarfile.REGTYPE
            content = data
            if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = data.decode()
                content = b""
            info.size = len(content) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(content) if info.size else None)
    return gzip.compress(buf.getvalue()) if gz else buf.getvalue()


def _many(n: int) -> list:
    return [("m/", tarfile.DIRTYPE, b"")] + [(f"m/f{i}", None, b"") for i in range(n)]


HOSTILE = {
    "absolute path": ([("/m/params.json", None, b"{}")], 400, "absolute path"),
    "dot-dot": ([("m/", tarfile.DIRTYPE, b""), ("m/../../evil", None, b"x")], 400, "'..'"),
    "symlink": (
        [("m/", tarfile.DIRTYPE, b""), ("m/link", tarfile.SYMTYPE, b"/etc/passwd")],
        400,
        "symbolic link",
    ),
    "hardlink": (
        [("m/", tarfile.DIRTYPE, b""), ("m/hard", tarfile.LNKTYPE, b"/etc/passwd")],
        400,
        "hard link",
    ),
    "char device": (
        [("m/", tarfile.DIRTYPE, b""), ("m/dev", tarfile.CHRTYPE, b"")],
        400,
        "a device",
    ),
    "block device": (
        [("m/", tarfile.DIRTYPE, b""), ("m/blk", tarfile.BLKTYPE, b"")],
        400,
        "a device",
    ),
    "fifo": ([("m/", tarfile.DIRTYPE, b""), ("m/fifo", tarfile.FIFOTYPE, b"")], 400, "a FIFO"),
    "two top-level folders": (
        [("m/a", None, b"x"), ("n/b", None, b"y")],
        400,
        "more than one top-level",
    ),
    "top-level file": ([("params.json", None, b"{}")], 400, "is a file"),
    "backslash": ([("m/a\\b", None, b"x")], 400, "backslash"),
    "bad model name": ([("bad-name/params.json", None, b"{}")], 400, "is not allowed"),
    "file inside a file": ([("m/a", None, b"x"), ("m/a/b", None, b"y")], 400, "inside a file"),
    "duplicate member": ([("m/a", None, b"x"), ("m/a", None, b"y")], 400, "listed twice"),
    "oversized member": ([("m/big", None, b"\0" * 300_000)], 413, "per file"),
    "too many members": (_many(60), 413, "more than 50 members"),
}


@pytest.fixture
def strict(tmp_path, monkeypatch):
    """A server with small archive limits; fails the test if extraction ever starts."""
    extracted = []
    real = uploads_module.extract_tarball

    def spy(*args, **kwargs):
        extracted.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(uploads_module, "extract_tarball", spy)
    limits = ArchiveLimits(max_members=50, max_member_bytes=200_000, max_unpacked_bytes=1_000_000)
    with make_client(tmp_path, archive=limits) as c:
        c.extracted = extracted
        yield c


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tarballs_rejected_before_writing(strict, tmp_path, case):
    members, status, message = HOSTILE[case]
    before = store_snapshot(tmp_path / "store")
    reply = strict.post("/upload", content=hostile(members))
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]
    assert strict.extracted == []  # rejected by the scan, before any file was written
    assert store_snapshot(tmp_path / "store") == before


def test_gzip_bombs_are_stopped_while_reading(strict, tmp_path):
    before = store_snapshot(tmp_path / "store")
    # 10 MB of zeros declared in one member: rejected from its header, never inflated
    declared = hostile([("m/zeros", None, b"\0" * 10_000_000)])
    assert len(declared) < 20_000
    assert strict.post("/upload", content=declared).status_code == 413
    # 3,000 empty members: each header is 512 bytes, 1.5 MB inflated from a few KB, and
    # nothing declared: the cap on inflated bytes stops it while it is being read
    limits = ArchiveLimits(
        max_members=10_000, max_member_bytes=200_000, max_unpacked_bytes=1_000_000
    )
    with make_client(tmp_path / "other", archive=limits) as c:
        bomb = hostile(_many(3000))
        assert len(bomb) < 50_000
        reply = c.post("/upload", content=bomb)
        assert reply.status_code == 413
        assert "unpacks to more than 1000000 bytes" in reply.json()["error"]
    assert strict.extracted == []
    assert store_snapshot(tmp_path / "store") == before


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [
        (b"", {}, 400, "empty"),
        (b"not a tarball at all" * 40, {}, 400, "not a tar archive"),
        (b"\x1f\x8b\x08\x00garbage-after-magic", {}, 400, "gzip"),
        (b"BZh91AY&SY" + b"\0" * 100, {}, 415, "bzip2"),
        (b"PK\x03\x04" + b"\0" * 100, {}, 415, "zip"),
        (b"plain", {"Content-Encoding": "gzip"}, 400, "not gzip data"),
        (b"x", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    ],
    ids=["empty", "not-tar", "corrupt-gzip", "bzip2", "zip", "lying-encoding", "brotli"],
)
def test_broken_uploads_are_client_errors(strict, body, headers, status, message):
    reply = strict.post("/upload", content=body, headers=headers)
    assert reply.status_code == status, reply.text
    assert message in reply.json()["error"]


def packed_as(bundle: Path, folder: str) -> bytes:
    """``bundle``'s tarball with its top-level folder and params.json's ``name`` both set to
    ``folder``, which :func:`~rootml.publishing.pack_bundle` refuses to write for a bad name."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(tarball(bundle)), mode="r:gz") as src,
        tarfile.open(fileobj=out, mode="w:gz", format=tarfile.GNU_FORMAT) as dst,
    ):
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else b""
            if member.name == "m/params.json":
                data = json.dumps({**json.loads(data), "name": folder}).encode()
                member.size = len(data)
            member.name = folder + member.name.removeprefix("m")
            dst.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return out.getvalue()


@pytest.mark.parametrize("name", ["../evil", "a-b", "x" * 65, "", "caf\u00e9", "a b"])
def test_model_names_are_restricted(served, bundles, tmp_path, name):
    """Bundle A uploaded under ``name`` (the form's 'name' field, ``?name=`` on a raw upload,
    and the tarball's top-level folder) is refused unless the name is [A-Za-z0-9_]{1,64}, and
    nothing is stored under it; an empty 'name' field renames nothing."""
    before = store_snapshot(tmp_path / "store")
    if name:
        body = tarball(bundles["a"])
        files = {"model": ("m.tgz", body, "x")}
        for how, reply in (
            ("form", served.post("/upload", files=files, data={"name": name})),
            ("query", served.post("/upload", content=body, params={"name": name})),
        ):
            assert reply.status_code == 400, how
            assert f"the 'name' field {name!r} is not allowed" in reply.json()["error"], how
            assert "[A-Za-z0-9_]{1,64}" in reply.json()["error"]
        reply = served.post("/upload", content=packed_as(bundles["a"], name))
        assert reply.status_code == 400, reply.text
        if ".." in name:
            assert f"tar member {name!r} climbs out of its folder" in reply.json()["error"]
        else:
            said = f"the tarball's top-level folder (the model name) {name!r} is not allowed"
            assert said in reply.json()["error"]
        assert store_snapshot(tmp_path / "store") == before
    else:
        files = {"model": ("m.tgz", tarball(bundles["a"], "empty_field"), "x")}
        reply = served.post("/upload", files=files, data={"name": name})
        assert reply.status_code == 200, reply.text
        assert reply.json()["name"] == "empty_field"
    assert name not in [m["name"] for m in served.get("/models").json()]
    reply = served.post("/json", json={"model": name or 5, "values": [1.0]})
    assert reply.status_code in (400, 404)
