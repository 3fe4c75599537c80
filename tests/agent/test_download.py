"""Bundle downloads against a real loopback HTTP server, one test per attack or fault.

No test sleeps: back-off is injected (and recorded), client timeouts are a fraction of a
second, and what a test would otherwise time is shown by an event: the server had not
answered yet, a worker thread finished, a server stop returned despite an hour-long hang.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.daemon import download as download_module
from edge_agent.daemon.download import download_bundle, part_path
from edge_agent.errors import DownloadError
from tests.support.agent_process import poll
from tests.support.bundle_server import BundleServer, Faults, refused_url

PATH = "/b/x.efb"
SIZE = 2 * 1024 * 1024 + 12345


@pytest.fixture
def server() -> Iterator[BundleServer]:
    with BundleServer() as srv:
        yield srv
        assert not srv.errors, srv.errors


@pytest.fixture(scope="module")
def data() -> bytes:
    return random.Random(20240611).randbytes(SIZE)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "x.efb"


class Backoff:
    """Records the back-off requests and never waits."""

    def __init__(self, action: Callable[[], object] | None = None, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.action = action
        self.delay = delay

    def __call__(self, failures: int) -> float:
        self.calls.append(failures)
        if self.action is not None:
            self.action()
        return self.delay


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def fetch(urls: list[str], dest: Path, blob: bytes, **kwargs: Any) -> Path:
    kwargs.setdefault("backoff", Backoff())
    kwargs.setdefault("timeout", 5.0)
    return download_bundle(urls, dest, size=len(blob), sha256=digest(blob), **kwargs)


# --- the happy path -----------------------------------------------------------------------


def test_download_writes_dest_and_removes_part(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data)
    assert fetch([url], dest, data) == dest
    assert dest.read_bytes() == data
    assert not part_path(dest).exists()
    assert server.ranges(PATH) == [None]


def test_progress_reported(
    server: BundleServer, data: bytes, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the 5 % rule: the 0.1 s one depends on how fast this machine is right now.
    monkeypatch.setattr(download_module, "_PROGRESS_INTERVAL", float("inf"))
    url = server.add(PATH, data)
    calls: list[tuple[int, int]] = []
    fetch([url], dest, data, on_progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (SIZE, SIZE)
    assert len(calls) >= 2
    assert all(total == SIZE for _, total in calls)
    dones = [done for done, _ in calls]
    assert dones == sorted(dones)
    assert len(set(dones)) == len(dones)  # the end is reported once
    # at most every 5 % (plus the final report): no spam
    steps = [b - a for a, b in zip([0, *dones[:-2]], dones[:-1], strict=True)]
    assert all(step >= SIZE // 20 for step in steps), steps
    assert len(calls) <= 21


# --- resuming ------------------------------------------------------------------------------


def test_resume_after_disconnect_uses_range(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(drop_after=700_000, drop_times=2))
    backoff = Backoff()
    fetch([url], dest, data, backoff=backoff)
    assert dest.read_bytes() == data
    ranges = server.ranges(PATH)
    assert ranges == [None, "bytes=700000-", "bytes=1400000-"]
    assert server.bytes_sent(PATH) == SIZE  # nothing was downloaded twice
    assert backoff.calls == [1, 2]
    # each resume names the version it continues (If-Range with the ETag)
    etag = f'"{digest(data)[:16]}"'
    assert [r.if_range for r in server.requests(PATH)] == [None, etag, etag]


def test_resume_after_process_restart(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(drop_after=1_000_000, drop_times=1))
    with pytest.raises(DownloadError, match="1 attempts"):
        fetch([url], dest, data, attempts=1)
    part = part_path(dest)
    assert part.stat().st_size == 1_000_000
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    assert not dest.exists()

    # a new process: only the .part survives
    fetch([url], dest, data, attempts=1)
    assert dest.read_bytes() == data
    assert not part.exists()
    assert server.ranges(PATH) == [None, "bytes=1000000-"]
    assert server.bytes_sent(PATH) == SIZE


def test_complete_part_from_earlier_run_needs_no_request(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data)
    part_path(dest).write_bytes(data)
    fetch([url], dest, data)
    assert dest.read_bytes() == data
    assert server.request_count(PATH) == 0


def test_stale_part_longer_than_the_file_restarts(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data)
    part_path(dest).write_bytes(data + b"junk")
    fetch([url], dest, data)
    assert dest.read_bytes() == data
    assert server.ranges(PATH) == [None]


def test_server_ignoring_range_restarts_cleanly(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data, faults=Faults(ignore_range=True, drop_after=900_000, drop_times=1))
    fetch([url], dest, data)
    assert dest.read_bytes() == data
    records = server.requests(PATH)
    assert [r.range for r in records] == [None, "bytes=900000-"]
    assert [r.status for r in records] == [200, 200]


def test_resource_changed_between_attempts_restarts_via_if_range(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    old = bytes(b ^ 0x5A for b in data)
    url = server.add(PATH, old, faults=Faults(drop_after=500_000, drop_times=1))
    fetch_failed = Backoff(action=lambda: server.add(PATH, data))  # republished meanwhile
    fetch([url], dest, data, backoff=fetch_failed)
    assert dest.read_bytes() == data
    records = server.requests(PATH)
    assert records[1].range == "bytes=500000-" and records[1].if_range is not None
    assert records[1].status == 200  # the server saw the validator change and sent it all


# --- attacks -------------------------------------------------------------------------------


def test_endless_data_refused(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(send_length=False, endless=True))
    with pytest.raises(DownloadError, match="more than the expected") as info:
        fetch([url], dest, data)
    assert "\n" not in str(info.value)
    assert part_path(dest).stat().st_size == 0  # the refused response was taken back
    assert not dest.exists()
    assert server.request_count(PATH) == 1  # refused, not retried


def test_extra_bytes_after_undeclared_length_refused(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data, faults=Faults(send_length=False, extra_bytes=1))
    with pytest.raises(DownloadError, match="more than the expected"):
        fetch([url], dest, data)
    assert not dest.exists()


def test_oversized_content_length_refused(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(declared_length=SIZE * 1000, endless=True))
    with pytest.raises(DownloadError, match=r"Content-Length .* refused before reading"):
        fetch([url], dest, data)
    assert part_path(dest).stat().st_size == 0
    assert server.request_count(PATH) == 1


def test_oversized_range_response_refused(server: BundleServer, data: bytes, dest: Path) -> None:
    """The partial file is shorter, the server claims a longer resource on resume."""
    url = server.add(PATH, data + b"more", faults=Faults(drop_after=300_000, drop_times=1))
    with pytest.raises(DownloadError, match="expected"):
        fetch([url], dest, data)
    assert not dest.exists()


def test_truncated_download_fails_after_retries(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data, faults=Faults(drop_after=200_000))  # every response
    backoff = Backoff()
    with pytest.raises(DownloadError) as info:
        fetch([url], dest, data, attempts=3, backoff=backoff)
    message = str(info.value)
    assert "failed after 3 attempts" in message
    assert f"600000 of {SIZE} bytes kept" in message
    assert "connection broke" in message
    assert backoff.calls == [1, 2]
    assert part_path(dest).stat().st_size == 600_000
    assert not dest.exists()


def test_short_resource_refused(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data[:-1000])
    with pytest.raises(DownloadError, match="does not match the expected"):
        fetch([url], dest, data)
    assert server.request_count(PATH) == 1


def test_tampered_download_rejected_and_part_removed(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    tampered = bytearray(data)
    tampered[SIZE // 2] ^= 0x01
    url = server.add(PATH, bytes(tampered))
    with pytest.raises(DownloadError) as info:
        fetch([url], dest, data)
    message = str(info.value)
    assert "SHA-256 mismatch" in message
    assert f"expected {digest(data)[:16]}" in message
    assert f"got {digest(bytes(tampered))[:16]}" in message
    assert "\n" not in message
    assert not part_path(dest).exists()
    assert not dest.exists()


def test_tampered_tail_after_resume_rejected(server: BundleServer, data: bytes, dest: Path) -> None:
    part_path(dest).write_bytes(data[:800_000])
    tampered = data[:-1] + bytes([data[-1] ^ 0xFF])
    url = server.add(PATH, tampered)
    with pytest.raises(DownloadError, match="SHA-256 mismatch"):
        fetch([url], dest, data)
    assert server.ranges(PATH) == ["bytes=800000-"]
    assert not part_path(dest).exists()


# --- mirrors, outages, errors -------------------------------------------------------------


def test_mirror_used_when_first_url_fails(server: BundleServer, data: bytes, dest: Path) -> None:
    broken = server.add("/broken.efb", data, faults=Faults(status=500))
    mirror = server.add(PATH, data)
    with refused_url() as down:
        backoff = Backoff()
        fetch([down, broken, mirror], dest, data, backoff=backoff)
    assert dest.read_bytes() == data
    assert backoff.calls == []  # untried mirrors are used at once, without waiting
    assert server.request_count("/broken.efb") == 1
    assert server.request_count(PATH) == 1


def test_server_error_retried_then_succeeds(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(status=503, status_times=2))
    backoff = Backoff()
    fetch([url], dest, data, backoff=backoff)
    assert dest.read_bytes() == data
    assert backoff.calls == [1, 2]


def test_not_found_is_not_retried(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.url("/missing.efb")
    with pytest.raises(DownloadError, match="HTTP 404 Not Found"):
        fetch([url], dest, data)
    assert server.request_count("/missing.efb") == 1


def test_hub_http_down_gives_one_line_error(data: bytes, dest: Path) -> None:
    with refused_url() as url:
        backoff = Backoff()
        with pytest.raises(DownloadError) as info:
            fetch([url], dest, data, attempts=3, backoff=backoff)
    message = str(info.value)
    assert "\n" not in message
    assert url in message
    assert "refused" in message.lower()
    assert "after 3 attempts" in message
    assert backoff.calls == [1, 2]


def test_hung_server_times_out(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data, faults=Faults(delay=3600.0))
    with pytest.raises(DownloadError, match="timed out"):
        fetch([url], dest, data, attempts=1, timeout=0.3)
    # the client gave up while the server still hung: it had sent no status line
    (request,) = poll(lambda: server.requests(PATH), "the request at the server")
    assert request.status == 0 and request.bytes_sent == 0
    assert not dest.exists()


def test_stall_mid_body_times_out_and_keeps_part(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data, faults=Faults(delay=30.0, delay_after=400_000))
    with pytest.raises(DownloadError, match="timed out"):
        fetch([url], dest, data, attempts=1, timeout=0.3)
    assert part_path(dest).stat().st_size == 400_000


@pytest.mark.parametrize("fault", ["refused", "status", "missing"])
def test_credentials_never_in_error_messages(
    server: BundleServer, data: bytes, dest: Path, fault: str
) -> None:
    server.add(PATH, data, faults=Faults(status=500))
    secret = dict(userinfo="alice:hunter2-s3cret", query="token=tok-XYZ-123&sig=ab%2Fcd")
    if fault == "refused":
        with refused_url() as plain:
            url = plain.replace("http://", "http://alice:hunter2-s3cret@") + "?" + secret["query"]
            with pytest.raises(DownloadError) as info:
                fetch([url], dest, data, attempts=2)
        shown = plain
    else:
        path = PATH if fault == "status" else "/missing.efb"
        url = server.url(path, **secret)
        with pytest.raises(DownloadError) as info:
            fetch([url], dest, data, attempts=2)
        shown = server.url(path)
        assert server.requests(path)[0].authorization  # the credentials were used...
    message = str(info.value)
    assert shown in message  # ...but the message names the URL without them
    for leaked in ("alice", "hunter2", "s3cret", "tok-XYZ", "token", "sig=", "ab%2Fcd", "ab/cd"):
        assert leaked not in message
    assert "\n" not in message


# --- cancellation, disk, locking -----------------------------------------------------------


def test_cancel_aborts(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data)
    cancel = threading.Event()
    seen: list[int] = []

    def on_progress(done: int, total: int) -> None:
        seen.append(done)
        cancel.set()

    with pytest.raises(DownloadError, match="cancelled"):
        fetch([url], dest, data, on_progress=on_progress, cancel=cancel)
    assert len(seen) == 1
    kept = part_path(dest).stat().st_size
    assert 0 < kept < SIZE  # kept for a later resume
    assert not dest.exists()


def test_cancel_during_backoff_aborts_without_waiting(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data, faults=Faults(status=500))
    cancel = threading.Event()
    backoff = Backoff(action=cancel.set, delay=3600.0)  # an hour: only the cancel ends it
    errors: list[BaseException] = []

    def download() -> None:
        try:
            fetch([url], dest, data, cancel=cancel, backoff=backoff)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=download, daemon=True)  # a failure must not hang pytest
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the download still waits out its back-off after cancel"
    (error,) = errors
    assert isinstance(error, DownloadError) and "cancelled" in str(error)
    assert backoff.calls == [1]
    assert server.request_count(PATH) == 1


def test_cancelled_before_start_makes_no_request(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(DownloadError, match="cancelled"):
        fetch([url], dest, data, cancel=cancel)
    assert server.request_count(PATH) == 0


def test_disk_full_keeps_part_for_resume(
    server: BundleServer, data: bytes, dest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add(PATH, data)
    real_write = download_module._write_all
    budget = [500_000]

    def write_until_full(fd: int, blob: bytes) -> None:
        if len(blob) > budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(blob)
        real_write(fd, blob)

    monkeypatch.setattr(download_module, "_write_all", write_until_full)
    with pytest.raises(DownloadError, match="disk full") as info:
        fetch([url], dest, data)
    assert "\n" not in str(info.value)
    kept = part_path(dest).stat().st_size
    assert 0 < kept <= 500_000
    assert server.request_count(PATH) == 1  # not retried: the network was fine

    monkeypatch.setattr(download_module, "_write_all", real_write)
    fetch([url], dest, data)
    assert dest.read_bytes() == data
    assert server.ranges(PATH)[-1] == f"bytes={kept}-"


def test_concurrent_download_of_same_dest_refused(
    server: BundleServer, data: bytes, dest: Path
) -> None:
    url = server.add(PATH, data)
    part = part_path(dest)
    with part.open("wb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(DownloadError, match="another process"):
            fetch([url], dest, data)
    assert server.request_count(PATH) == 0


def test_caller_client_is_used_and_left_open(server: BundleServer, data: bytes, dest: Path) -> None:
    url = server.add(PATH, data)
    with httpx.Client() as client:
        fetch([url], dest, data, client=client)
        assert not client.is_closed
    assert dest.read_bytes() == data


def test_invalid_arguments_rejected(dest: Path) -> None:
    with pytest.raises(ValueError, match="sequence"):
        download_bundle("http://x/y", dest, size=1, sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        download_bundle(["http://x/y"], dest, size=1, sha256="xyz")
    with pytest.raises(ValueError, match="URL"):
        download_bundle([], dest, size=1, sha256="0" * 64)


# --- the test server itself -----------------------------------------------------------------


def test_server_stops_promptly_and_leaks_no_threads(data: bytes, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    srv = BundleServer().start()
    srv.add("/hang", data, faults=Faults(delay=3600.0))
    srv.add("/endless", data, faults=Faults(send_length=False, endless=True))

    def hold(path: str) -> None:
        try:
            with httpx.stream("GET", srv.url(path), timeout=60) as response:
                for _ in response.iter_raw():
                    pass
        except httpx.HTTPError:
            pass

    clients = [threading.Thread(target=hold, args=(p,), daemon=True) for p in ("/hang", "/endless")]
    for t in clients:
        t.start()
    poll(
        lambda: srv.request_count("/hang") + srv.request_count("/endless") == 2,
        "both requests at the server",
    )
    # /hang would hold its handler for an hour and /endless never ends: stop() returns
    # only because it wakes and cuts them.
    stopping = threading.Thread(target=srv.stop, daemon=True)
    stopping.start()
    stopping.join(60)
    assert not stopping.is_alive(), "stop() waited for a hung or endless response"
    for t in clients:
        t.join(60)
        assert not t.is_alive(), "a client was left hanging"
    assert set(threading.enumerate()) == before
