"""Resumable, size-capped, digest-checked bundle downloads over HTTP(S).

Integrity comes from the signed directive (size and SHA-256), not from the transport,
so a bundle may come from any server, mirror or CDN. :func:`download_bundle` writes
into ``<dest>.part`` (mode 0600, locked against a second concurrent download), resumes
it with ``Range: bytes=N-`` after a dropped connection or a process restart, never
writes more than ``size`` bytes (endless-data attack), checks the SHA-256 of the whole
file and only then fsyncs and renames it to ``dest``.

The network sits behind one ``httpx.Client`` (injectable), and every transport problem
(connection, timeout, protocol, bad status) is normalised into one
:class:`~edge_agent.errors.DownloadError` whose one-line message names the URL without
its credentials or query string.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from edge_agent.durable import fsync_dir
from edge_agent.errors import DownloadError
from edge_agent.urls import redact_url

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from hashlib import _Hash

DEFAULT_CHUNK: Final = 64 * 1024
DEFAULT_TIMEOUT: Final = 30.0
DEFAULT_ATTEMPTS: Final = 5
PART_SUFFIX: Final = ".part"

_HASH_BLOCK: Final = 1 << 20
_PROGRESS_INTERVAL: Final = 0.1  # seconds between progress reports...
_PROGRESS_STEP: Final = 0.05  # ...or this share of the total, whichever comes first
_BACKOFF_BASE: Final = 0.5
_BACKOFF_CAP: Final = 30.0
_RETRYABLE_STATUS: Final = frozenset({408, 425, 429})  # and every 5xx
_DISK_FULL: Final = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)})
_SHA256_HEX: Final = frozenset("0123456789abcdef")
_JITTER: Final = random.SystemRandom()


def part_path(dest: Path) -> Path:
    """Where the download of ``dest`` is kept until verified: ``dest`` + ``.part``."""
    return dest.with_suffix(dest.suffix + PART_SUFFIX)


def default_backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed attempts.

    Exponential from 0.5 s, capped at 30 s, with jitter (half to all of the step) so
    that a fleet coming back online does not retry in lockstep.
    """
    step = min(_BACKOFF_CAP, _BACKOFF_BASE * 2.0 ** min(max(failures, 1) - 1, 16))
    return step * (0.5 + 0.5 * _JITTER.random())


def download_bundle(
    urls: Sequence[str],
    dest: Path,
    *,
    size: int,
    sha256: str,
    client: httpx.Client | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    chunk: int = DEFAULT_CHUNK,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: Callable[[int], float] | None = None,
    cancel: threading.Event | None = None,
    ca_file: Path | None = None,
) -> Path:
    """Download a file of known size and SHA-256 to ``dest``, resuming where possible.

    Does network and file I/O. ``urls`` are mirrors of the same bytes, tried in order:
    after a failure the next one is used, and ``attempts`` bounds the number of
    requests overall (one that made progress counts too; its bytes stay in the
    ``.part`` for the next call). Before retrying a URL that already failed, waits
    ``backoff(failures)`` seconds (default :func:`default_backoff`); a URL that cannot
    serve the file (404, wrong size, endless data, a ``Content-Encoding``...) is not
    tried again. ``timeout`` applies to connecting and to each read; ``chunk`` is how
    many bytes are gathered before each write to disk.

    The bytes go to :func:`part_path` (mode 0600). A ``.part`` left by an earlier call
    is hashed and continued with an HTTP ``Range`` request; a server that ignores the
    range (200) restarts it from zero. ``on_progress(done, total)`` is called at most
    every 0.1 s or 5 %, and once at the end. Setting ``cancel`` aborts between reads,
    before each request and during back-off waits; a read that blocks is bounded by
    ``timeout``. ``ca_file`` is the CA that signed an ``https://`` hub's certificate
    (default: the system's CAs); it is not used with an injected ``client``.

    Returns:
        ``dest``, holding exactly ``size`` bytes with the given SHA-256, fsynced and
        atomically renamed from the ``.part``.

    Raises:
        DownloadError: in one line, when every attempt failed (the last cause, naming
            the URL without credentials or query), when no URL can serve the file, on a
            SHA-256 mismatch (the ``.part`` is deleted), on ``cancel`` (``.part`` kept),
            on a full disk (``.part`` kept for a later resume), or when another download
            of ``dest`` holds the ``.part``.
        ValueError: invalid arguments (no URLs, negative size, malformed digest...).
    """
    mirrors = _check_arguments(urls, size, sha256, timeout, chunk, attempts)
    stop = cancel if cancel is not None else threading.Event()
    if stop.is_set():
        raise DownloadError(f"download of {dest.name} cancelled")
    if client is not None:
        http = client
    else:
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise DownloadError(f"cannot use CA file {ca_file}: {exc}") from exc
        http = httpx.Client(timeout=timeout, follow_redirects=True, verify=verify)
    try:
        part = _PartFile.open(part_path(dest), size)
        try:
            job = _Job(
                urls=mirrors,
                dest=dest,
                part=part,
                size=size,
                sha256=sha256.lower(),
                client=http,
                progress=_Progress(on_progress, size),
                timeout=timeout,
                chunk=chunk,
                attempts=attempts,
                backoff=backoff or default_backoff,
                cancel=stop,
            )
            return job.run()
        finally:
            part.close()
    finally:
        if client is None:
            http.close()


# --- internals ---------------------------------------------------------------------------


class _AttemptError(Exception):
    """One request failed; ``give_up`` when retrying this URL cannot help."""

    def __init__(self, message: str, *, give_up: bool = False) -> None:
        super().__init__(message)
        self.give_up = give_up


class _Job:
    """The state of one :func:`download_bundle` call."""

    def __init__(
        self,
        *,
        urls: tuple[str, ...],
        dest: Path,
        part: _PartFile,
        size: int,
        sha256: str,
        client: httpx.Client,
        progress: _Progress,
        timeout: float,
        chunk: int,
        attempts: int,
        backoff: Callable[[int], float],
        cancel: threading.Event,
    ) -> None:
        self.urls = urls
        self.dest = dest
        self.part = part
        self.size = size
        self.sha256 = sha256
        self.client = client
        self.progress = progress
        self.timeout = timeout
        self.chunk = chunk
        self.attempts = attempts
        self.backoff = backoff
        self.cancel = cancel
        self.etags: dict[str, str] = {}

    def run(self) -> Path:
        if self.part.offset == self.size:
            if self.part.hexdigest() == self.sha256:
                return self._install()
            self.part.restart()  # a complete but wrong leftover: start over
        failed: set[int] = set()
        dead: set[int] = set()
        failures = 0
        index = 0
        last = ""
        for attempt in range(1, self.attempts + 1):
            self._check_cancel()
            if self.part.offset == self.size:
                return self._verify_and_install()
            url = self.urls[index]
            try:
                self._fetch(url)
            except _AttemptError as exc:
                last = f"{redact_url(url)}: {exc}"
                failures += 1
                failed.add(index)
                if exc.give_up:
                    dead.add(index)
            else:
                return self._verify_and_install()
            if len(dead) == len(self.urls):
                raise DownloadError(_one_line(f"download of {self.dest.name} failed: {last}"))
            if attempt == self.attempts:
                break
            index = _next_alive(index, len(self.urls), dead)
            if index in failed and self.cancel.wait(max(0.0, self.backoff(failures))):
                raise self._cancelled()
        self._check_cancel()
        raise DownloadError(
            _one_line(
                f"download of {self.dest.name} failed after {self.attempts} attempts"
                f" ({self.part.offset} of {self.size} bytes kept for a later resume): {last}"
            )
        )

    def _fetch(self, url: str) -> None:
        """One request, continuing the ``.part``; returns once it holds ``size`` bytes.

        Raises:
            _AttemptError: transport error, bad status or response, short body.
            DownloadError: cancelled, or the ``.part`` cannot be written.
        """
        start = self.part.offset
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if url in self.etags:
                headers["If-Range"] = self.etags[url]
        try:
            with self.client.stream(
                "GET", url, headers=headers, timeout=self.timeout, follow_redirects=True
            ) as response:
                self._accept(response, start)
                etag = response.headers.get("ETag")
                if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
                    self.etags[url] = etag
                self._receive(response)
        except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError) as exc:
            give_up = isinstance(
                exc, (httpx.InvalidURL, httpx.UnsupportedProtocol, httpx.TooManyRedirects)
            )
            raise _AttemptError(_describe(exc, url, self.timeout), give_up=give_up) from exc
        if self.part.offset < self.size:
            raise _AttemptError(f"response ended after {self.part.offset} of {self.size} bytes")

    def _accept(self, response: httpx.Response, start: int) -> None:
        """Check status and lengths before reading the body; restart the ``.part`` if needed.

        Raises:
            _AttemptError: the response cannot continue the file.
        """
        status = response.status_code
        if status == 416:
            total = _unsatisfied_length(response.headers.get("Content-Range"))
            if total is not None and total < self.size:
                raise _AttemptError(
                    f"server has only {total} bytes, expected {self.size}", give_up=True
                )
            self.part.restart()
            raise _AttemptError(f"range from byte {start} not satisfiable; starting over")
        if status not in (200, 206):
            reason = f"HTTP {status} {response.reason_phrase}".strip()
            raise _AttemptError(reason, give_up=status < 500 and status not in _RETRYABLE_STATUS)
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            raise _AttemptError(f"unexpected Content-Encoding {encoding!r}", give_up=True)
        length = _content_length(response)
        if status == 200:
            if length is not None and length != self.size:
                raise _AttemptError(
                    f"Content-Length {length} does not match the expected {self.size} bytes;"
                    " refused before reading",
                    give_up=True,
                )
            if start:
                self.part.restart()  # the server ignored Range and sends it all
            return
        parsed = _content_range(response.headers.get("Content-Range"))
        if parsed is None:
            self.part.restart()
            raise _AttemptError("206 response without a valid Content-Range; starting over")
        first, last, total = parsed
        if total is not None and total != self.size:
            raise _AttemptError(
                f"server says the file has {total} bytes, expected {self.size}", give_up=True
            )
        if first != start:
            self.part.restart()
            raise _AttemptError(f"server resumed at byte {first}, not {start}; starting over")
        remaining = self.size - start
        if last - first + 1 > remaining or (length is not None and length > remaining):
            raise _AttemptError(
                f"Content-Length {length} is more than the {remaining} bytes remaining;"
                " refused before reading",
                give_up=True,
            )

    def _receive(self, response: httpx.Response) -> None:
        """Append the body to the ``.part`` in writes of about ``chunk`` bytes, never past ``size``.

        A response that carries more than the remaining bytes is refused as a whole:
        what it wrote is taken back, so the outcome does not depend on read sizes.
        Bytes that arrived before a broken connection, a timeout or a cancel are kept.

        Raises:
            _AttemptError: more bytes than expected (endless data).
            DownloadError: cancelled, or the ``.part`` cannot be written.
            httpx.HTTPError: the transport failed while reading.
        """
        mark = self.part.mark()
        room = self.size - self.part.offset
        pending = bytearray()
        try:
            # Pieces as the transport delivers them (at most 64 KiB each in httpcore).
            for piece in response.iter_raw():
                if self.cancel.is_set():
                    self._flush(pending)
                    raise self._cancelled()
                if len(pending) + len(piece) > room:
                    self.part.rollback(mark)
                    raise _AttemptError(
                        f"server sent more than the expected {self.size} bytes"
                        " (endless data); refused",
                        give_up=True,
                    )
                pending += piece
                if len(pending) >= self.chunk:
                    room -= len(pending)
                    self._flush(pending)
        except (httpx.HTTPError, httpx.StreamError, OSError):
            self._flush(pending)
            raise
        self._flush(pending)

    def _flush(self, pending: bytearray) -> None:
        if pending:
            self.part.write(pending)
            pending.clear()
            self.progress.update(self.part.offset)

    def _verify_and_install(self) -> Path:
        got = self.part.hexdigest()
        if got != self.sha256:
            self.part.discard()
            raise DownloadError(
                f"download of {self.dest.name} rejected: SHA-256 mismatch (expected"
                f" {self.sha256[:16]}..., got {got[:16]}...); partial file removed"
            )
        return self._install()

    def _install(self) -> Path:
        self.part.install(self.dest)
        self.progress.finish(self.size)
        return self.dest

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise self._cancelled()

    def _cancelled(self) -> DownloadError:
        return DownloadError(
            f"download of {self.dest.name} cancelled"
            f" ({self.part.offset} of {self.size} bytes kept for a later resume)"
        )


class _PartFile:
    """The ``.part`` file: an open, locked descriptor, its length and running SHA-256."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.offset = 0
        self.hasher: _Hash = hashlib.sha256()

    @classmethod
    def open(cls, path: Path, size: int) -> _PartFile:
        """Open (or create, mode 0600) and lock ``path``, hashing what it already holds.

        A file longer than ``size`` is emptied.

        Raises:
            DownloadError: it cannot be opened or read, or another download holds it.
        """
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise DownloadError(f"cannot open {path}: {exc.strerror or exc}") from exc
        part = cls(path, fd)
        try:
            part._lock()
            if sys.platform != "win32":
                os.fchmod(fd, 0o600)
            if os.fstat(fd).st_size > size:
                part.restart()
            else:
                part._hash_existing()
        except OSError as exc:
            part.close()
            raise DownloadError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except BaseException:
            part.close()
            raise
        return part

    def _lock(self) -> None:
        if sys.platform == "win32":
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise DownloadError(
                f"{self.path.name} is being downloaded by another process or thread"
            ) from exc

    def _hash_existing(self) -> None:
        os.lseek(self.fd, 0, os.SEEK_SET)
        while block := os.read(self.fd, _HASH_BLOCK):
            self.hasher.update(block)
            self.offset += len(block)

    def hexdigest(self) -> str:
        """SHA-256 of the bytes written so far."""
        return self.hasher.hexdigest()

    def write(self, data: bytes | bytearray) -> None:
        """Append ``data``.

        Raises:
            DownloadError: disk full (the file is kept for a later resume) or other
                write error.
        """
        try:
            _write_all(self.fd, data)
        except OSError as exc:
            self._resync()
            if exc.errno in _DISK_FULL:
                raise DownloadError(
                    f"disk full writing {self.path}: {self.offset} bytes kept for a later resume"
                ) from exc
            raise DownloadError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.hasher.update(data)
        self.offset += len(data)

    def _resync(self) -> None:
        """After a failed write, trim what the kernel may have accepted of it."""
        try:
            os.ftruncate(self.fd, self.offset)
            os.lseek(self.fd, self.offset, os.SEEK_SET)
        except OSError:
            pass  # the next call re-hashes whatever the file holds

    def mark(self) -> tuple[int, _Hash]:
        """A point to :meth:`rollback` to."""
        return self.offset, self.hasher.copy()

    def rollback(self, mark: tuple[int, _Hash]) -> None:
        """Forget everything written since ``mark``.

        Raises:
            DownloadError: the file cannot be truncated.
        """
        offset, hasher = mark
        self._truncate(offset)
        self.hasher = hasher.copy()

    def restart(self) -> None:
        """Empty the file.

        Raises:
            DownloadError: the file cannot be truncated.
        """
        self._truncate(0)
        self.hasher = hashlib.sha256()

    def _truncate(self, offset: int) -> None:
        try:
            os.ftruncate(self.fd, offset)
            os.lseek(self.fd, offset, os.SEEK_SET)
        except OSError as exc:
            raise DownloadError(f"cannot truncate {self.path}: {exc.strerror or exc}") from exc
        self.offset = offset

    def install(self, dest: Path) -> None:
        """fsync, then atomically rename to ``dest`` and fsync its directory.

        Raises:
            DownloadError: any of it fails (the ``.part`` stays).
        """
        try:
            os.fsync(self.fd)
            self.path.replace(dest)
        except OSError as exc:
            raise DownloadError(f"cannot install {dest}: {exc.strerror or exc}") from exc
        fsync_dir(dest.parent)

    def discard(self) -> None:
        """Delete the file (it is closed by :meth:`close`)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise DownloadError(f"cannot remove {self.path}: {exc.strerror or exc}") from exc
        self.offset = 0
        self.hasher = hashlib.sha256()

    def close(self) -> None:
        """Close the descriptor, releasing the lock. Idempotent."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)


class _Progress:
    """Calls ``on_progress`` at most every 0.1 s or 5 % of the total, and at the end."""

    def __init__(
        self,
        callback: Callable[[int, int], None] | None,
        total: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callback = callback
        self.total = total
        self.clock = clock
        self.step = max(1, int(total * _PROGRESS_STEP))
        self.last_done: int | None = None
        self.last_time = clock()

    def update(self, done: int) -> None:
        if self.callback is None:
            return
        now = self.clock()
        previous = self.last_done if self.last_done is not None else 0
        if abs(done - previous) >= self.step or now - self.last_time >= _PROGRESS_INTERVAL:
            self.last_done, self.last_time = done, now
            self.callback(done, self.total)

    def finish(self, done: int) -> None:
        if self.callback is not None and self.last_done != done:
            self.last_done, self.last_time = done, self.clock()
            self.callback(done, self.total)


def _check_arguments(
    urls: Sequence[str], size: int, sha256: str, timeout: float, chunk: int, attempts: int
) -> tuple[str, ...]:
    if isinstance(urls, str):
        raise ValueError("urls must be a sequence of URLs, not one string")
    mirrors = tuple(urls)
    if not mirrors:
        raise ValueError("at least one URL is needed")
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    if len(sha256) != 64 or not set(sha256.lower()) <= _SHA256_HEX:
        raise ValueError("sha256 must be 64 hexadecimal digits")
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0, not {timeout}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, not {chunk}")
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, not {attempts}")
    return mirrors


def _next_alive(index: int, count: int, dead: set[int]) -> int:
    for step in range(1, count + 1):
        candidate = (index + step) % count
        if candidate not in dead:
            return candidate
    return index


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """Parse ``bytes first-last/total`` (total may be ``*``)."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    span, slash, total_text = spec.strip().partition("/")
    first_text, dash, last_text = span.partition("-")
    if unit.lower() != "bytes" or not slash or not dash:
        return None
    try:
        first, last = int(first_text), int(last_text)
        total = None if total_text.strip() == "*" else int(total_text)
    except ValueError:
        return None
    if first < 0 or last < first or (total is not None and last >= total):
        return None
    return first, last, total


def _unsatisfied_length(value: str | None) -> int | None:
    """The total length from a 416 ``Content-Range: bytes */N``."""
    if value is None:
        return None
    unit, _, spec = value.strip().partition(" ")
    star, slash, total_text = spec.strip().partition("/")
    if unit.lower() != "bytes" or star.strip() != "*" or not slash:
        return None
    try:
        return int(total_text)
    except ValueError:
        return None


def _secrets(url: str) -> list[str]:
    """Substrings of ``url`` that must not appear in a message: credentials, query..."""
    found = [url]
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    userinfo = parts.netloc.rpartition("@")[0]
    found += [userinfo, *userinfo.split(":", 1), parts.query, parts.fragment]
    found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
    found += [unquote(s) for s in found]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _describe(exc: BaseException, url: str, timeout: float) -> str:
    """A one-line cause for ``exc``, with anything secret from ``url`` masked."""
    detail = str(exc).strip() or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        cause = f"cannot connect within {timeout:g} s"
    elif isinstance(exc, httpx.ReadTimeout):
        cause = f"timed out: no data for {timeout:g} s"
    elif isinstance(exc, httpx.TimeoutException):
        cause = f"timed out ({type(exc).__name__})"
    elif isinstance(exc, httpx.ConnectError):
        cause = f"cannot connect ({detail})"
    elif isinstance(exc, httpx.RemoteProtocolError):
        cause = f"connection broke ({detail})"
    elif isinstance(exc, OSError):
        cause = f"network error ({exc.strerror or detail})"
    else:
        cause = f"{type(exc).__name__}: {detail}"
    for secret in _secrets(url):
        cause = cause.replace(secret, "***")
    return _one_line(cause)


def _one_line(text: str) -> str:
    return " ".join(text.split())
