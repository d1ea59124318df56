"""The fetch stage against real loopback servers: downloads, retries, and failures that leave
nothing behind."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import time

import pytest

from rootml.exceptions import ConfigError, InputFileError, TreeNotFoundError
from rootml.fetching import RECORD_NAME, FetchRecord, fetch

FAST = {"backoff": 0.01, "timeout": 5.0}


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _serve(server, local, name="events.root"):
    """Put a copy of ``local`` where ``server`` serves it; return (served path, URL)."""
    target = server.root / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(local, target)
    return target, server.url(name)


# ---------------------------------------------------------------------------------------------
# local files: verified in place, never copied


@pytest.mark.parametrize("as_url", [False, True], ids=["path", "file-url"])
def test_local_file_is_verified_not_copied(events_ttree, tmp_path, as_url):
    out = tmp_path / "out"
    src = events_ttree.resolve().as_uri() if as_url else str(events_ttree)
    record = fetch(src, out, tree="events")
    assert record == FetchRecord(
        source=src,
        url=str(events_ttree.resolve()),
        path=str(events_ttree.resolve()),
        size=events_ttree.stat().st_size,
        sha256=_sha256(events_ttree),
        copied=False,
    )
    assert _listing(out) == {RECORD_NAME}  # no copy, no temporary file
    assert json.loads((out / RECORD_NAME).read_text()) == record.to_dict()
    assert FetchRecord.load(out / RECORD_NAME) == record


def test_local_file_with_the_right_checksum(events_ttree, tmp_path):
    digest = _sha256(events_ttree).upper()  # as some tools print it
    assert fetch(str(events_ttree), tmp_path / "out", sha256=digest).sha256 == digest.lower()


def test_local_missing_tree_fails_before_writing(events_ttree, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(TreeNotFoundError, match=re.escape(str(events_ttree.resolve()))):
        fetch(str(events_ttree), out, tree="Events")
    assert _listing(out) == set()


def test_local_checksum_mismatch_names_file_expected_and_got(events_ttree, tmp_path):
    out = tmp_path / "out"
    wrong = "0" * 64
    message = rf"(?s)expected {wrong}, got {_sha256(events_ttree)}.*in file {events_ttree}"
    with pytest.raises(InputFileError, match=message):
        fetch(str(events_ttree), out, sha256=wrong)
    assert _listing(out) == set()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sha256": "abc"}, "not 64 hexadecimal digits"),
        ({"retries": -1}, "retries must be 0 or more"),
        ({"timeout": 0}, "timeout > 0"),
    ],
)
def test_bad_options_are_config_errors(events_ttree, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        fetch(str(events_ttree), tmp_path / "out", **options)
    assert _listing(tmp_path / "out") == set()


# ---------------------------------------------------------------------------------------------
# HTTP


@pytest.mark.network
def test_http_download_is_complete_verified_and_atomic(http_server, events_ttree, tmp_path, caplog):
    served, url = _serve(http_server, events_ttree)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="rootml.fetching"):
        record = fetch(url, out, tree="events", sha256=_sha256(served), **FAST)
    local = out / "events.root"
    assert record == FetchRecord(
        url, url, str(local.resolve()), served.stat().st_size, _sha256(served), copied=True
    )
    assert local.read_bytes() == served.read_bytes()
    assert _listing(out) == {"events.root", RECORD_NAME}  # no temporary file left
    assert FetchRecord.load(out / RECORD_NAME) == record
    assert [m for m, _, _ in http_server.requests] == ["GET"]  # one plain, whole-file GET
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(url in m and "MB/s" in m and str(record.size) in m for m in info), info


@pytest.mark.network
def test_http_download_replaces_an_older_copy(http_server, events_ttree, events_rntuple, tmp_path):
    out = tmp_path / "out"
    _, url = _serve(http_server, events_ttree)
    fetch(url, out, **FAST)
    served, _ = _serve(http_server, events_rntuple)  # the file at the URL changed
    record = fetch(url, out, tree="events", **FAST)
    assert (out / "events.root").read_bytes() == served.read_bytes()
    assert record.sha256 == _sha256(served)
    assert _listing(out) == {"events.root", RECORD_NAME}


@pytest.mark.network
def test_http_retries_after_two_503s(http_server, events_ttree, tmp_path, caplog):
    served, url = _serve(http_server, events_ttree)
    http_server.faults["fail_next"] = 2
    with caplog.at_level(logging.WARNING, logger="rootml.fetching"):
        record = fetch(url, tmp_path / "out", retries=3, **FAST)
    assert record.sha256 == _sha256(served)
    assert len(http_server.requests) == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert all("503" in w for w in warnings)


@pytest.mark.network
def test_http_503_until_retries_run_out(http_server, events_ttree, tmp_path):
    _, url = _serve(http_server, events_ttree)
    http_server.faults["fail_next"] = 10
    message = rf"cannot download {re.escape(url)} after 3 attempts: HTTP 503"
    with pytest.raises(InputFileError, match=message):
        fetch(url, tmp_path / "out", retries=2, **FAST)
    assert len(http_server.requests) == 3
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_http_404_fails_at_once_naming_the_url(http_server, tmp_path):
    url = http_server.url("missing/events.root")
    started = time.monotonic()
    with pytest.raises(InputFileError, match=rf"(?s)HTTP 404.*in file {re.escape(url)}$"):
        fetch(url, tmp_path / "out", retries=5, backoff=10.0, timeout=5.0)
    assert time.monotonic() - started < 5  # no backoff sleep: not retried
    assert len(http_server.requests) == 1
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_unreachable_server_fails_after_bounded_retries(closed_port, tmp_path):
    url = f"http://127.0.0.1:{closed_port}/events.root"
    started = time.monotonic()
    message = rf"cannot download {re.escape(url)} after 3 attempts: .*refused"
    with pytest.raises(InputFileError, match=message) as info:
        fetch(url, tmp_path / "out", retries=2, **FAST)
    assert time.monotonic() - started < 5
    assert "--retries" in str(info.value)  # the fix hint
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_truncated_body_is_a_size_mismatch_and_leaves_nothing(http_server, events_ttree, tmp_path):
    served, url = _serve(http_server, events_ttree)
    http_server.faults["truncate"] = 1000
    size = served.stat().st_size
    message = rf"{re.escape(url)} after 2 attempts: size mismatch: expected {size} bytes, got 1000"
    with pytest.raises(InputFileError, match=message):
        fetch(url, tmp_path / "out", retries=1, **FAST)
    assert len(http_server.requests) == 2  # a short body is retried like a dropped connection
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_wrong_checksum_fails_naming_url_expected_and_got(http_server, events_ttree, tmp_path):
    served, url = _serve(http_server, events_ttree)
    wrong = hashlib.sha256(b"another file").hexdigest()
    message = rf"(?s)expected {wrong}, got {_sha256(served)}.*in file {re.escape(url)}$"
    with pytest.raises(InputFileError, match=message):
        fetch(url, tmp_path / "out", sha256=wrong, **FAST)
    assert len(http_server.requests) == 1  # the same bytes would come again: not retried
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_tree_check_failure_deletes_the_download(http_server, events_ttree, tmp_path):
    _, url = _serve(http_server, events_ttree)
    out = tmp_path / "out"
    with pytest.raises(TreeNotFoundError, match=r"no TTree or RNTuple named 'Events'"):
        fetch(url, out, tree="Events", **FAST)
    assert _listing(out) == set()


@pytest.mark.network
def test_not_a_root_file_is_rejected_after_download(http_server, tmp_path):
    (http_server.root / "files.txt").write_text("/store/a.root\n")
    with pytest.raises(InputFileError, match="cannot open as a ROOT file"):
        fetch(http_server.url("files.txt"), tmp_path / "out", tree="events", **FAST)
    assert _listing(tmp_path / "out") == set()


@pytest.mark.network
def test_lfn_is_fetched_through_the_redirector(http_server, events_ttree, tmp_path):
    lfn = "/store/mc/rootml-test/events.root"
    served, _ = _serve(http_server, events_ttree, lfn.lstrip("/"))
    redirector = http_server.url("")
    record = fetch(lfn, tmp_path / "out", redirector=redirector, tree="events", **FAST)
    assert record.source == lfn
    assert record.url == redirector.rstrip("/") + "/" + lfn
    assert record.sha256 == _sha256(served)


@pytest.mark.network
def test_progress_bar_goes_to_stderr_only(http_server, events_ttree, tmp_path, capsys):
    _, url = _serve(http_server, events_ttree)
    fetch(url, tmp_path / "out", progress=True, **FAST)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "events.root" in captured.err
    fetch(url, tmp_path / "out2", progress=None, **FAST)  # stderr is not a terminal here
    assert capsys.readouterr().err == ""


# ---------------------------------------------------------------------------------------------
# XRootD


@pytest.mark.network
def test_xrootd_download(xrootd_server, events_rntuple, tmp_path):
    served, url = _serve(xrootd_server, events_rntuple, "fetching-events.root")
    out = tmp_path / "out"
    record = fetch(url, out, tree="events", sha256=_sha256(served), **FAST)
    assert record.url == url
    assert record.copied
    assert record.size == served.stat().st_size
    assert (out / "fetching-events.root").read_bytes() == served.read_bytes()
    assert _listing(out) == {"fetching-events.root", RECORD_NAME}


@pytest.mark.network
def test_xrootd_missing_file_fails_at_once(xrootd_server, tmp_path):
    url = xrootd_server.url("no-such-file.root")
    started = time.monotonic()
    with pytest.raises(InputFileError, match=rf"(?s)no such file.*in file {re.escape(url)}$"):
        fetch(url, tmp_path / "out", retries=5, backoff=10.0, timeout=5.0)
    assert time.monotonic() - started < 5
    assert _listing(tmp_path / "out") == set()
