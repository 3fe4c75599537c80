"""Device enrolment and revocation: broker accounts, the hub's records, agent bundles.

Enrolling a device

1. checks its id (a safe name, not the hub's own account, not already enrolled);
2. generates a random broker password and writes the device's ready agent bundle to
   ``out_dir/<device_id>/``: ``agent.toml``, ``broker-password`` (0600) and
   ``trust.json`` (loadable by :meth:`edge_agent.daemon.config.AgentConfig.load`);
3. adds the account to Mosquitto's password file ``broker_dir/passwd``, in Mosquitto's
   own hashed format (PBKDF2-SHA512, ``user:$7$<iterations>$<b64 salt>$<b64 hash>``),
   so the hub does not need the ``mosquitto_passwd`` binary;
4. records the device (tags, enrolment time) in the hub's store.

Device access to topics comes from the ``pattern`` rules of the deploy ACL
(``deploy/mosquitto/acl``: ``%u`` is the username, which is the device id), so no
per-device ACL line is written; :func:`ensure_acl` copies the deploy ACL into
``broker_dir`` when none is there, and otherwise only adds the devices' read rule for
the trust rotations (``edgefleet/v1/trust``) to an ACL written before it existed.

Mosquitto reads its password file at start and on SIGHUP: after enrolling or revoking,
reload the broker (``systemctl reload mosquitto``, or :func:`reload_broker` with its pid
file: ``edgefleet device enroll|revoke --reload-pid-file``).

Passwords never appear in logs, exception messages or ``repr``. The password file and
the bundle's password are written atomically (temp file, fsync, rename) with mode 0600;
concurrent enrolments on one machine are serialised by a lock file in ``broker_dir``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from edge_agent.contract.fields import safe_name
from edge_agent.daemon.config import BrokerConfig
from edge_agent.errors import ValidationError
from hub.db import open_database
from hub.errors import HubError
from hub.store import Store

log = logging.getLogger("edgefleet.hub.enroll")

#: The hub's broker account (granted ``edgefleet/v1/#`` by the deploy ACL).
HUB_USERNAME: Final = "edgefleet-hub"
#: The topic ACL, shipped inside the package (so a wheel install has it too) and linked
#: from ``deploy/mosquitto/acl``; copied into a broker directory that has none.
DEPLOY_ACL: Final = Path(__file__).resolve().parent / "mosquitto.acl"
#: The rule that lets every device read the fleet's trust rotations.
TRUST_ACL_RULE: Final = "pattern read edgefleet/v1/trust"
#: PBKDF2 iterations, as ``mosquitto_passwd`` 2.x uses. Broker passwords are 256-bit
#: random secrets, so the count is not what protects them; it is checked on every
#: connection, so it is kept low.
PBKDF2_ITERATIONS: Final = 101
_SALT_BYTES: Final = 12
_HASH_BYTES: Final = 64
_PASSWORD_BYTES: Final = 32  # token_urlsafe(32): 43 characters
_PRIVATE: Final = 0o600
#: The broker's own files (password file, ACL): the hub writes them, Mosquitto's user
#: reads them through the broker directory's group (see the README's real-fleet layout).
_BROKER_READABLE: Final = 0o640
_BROKER_DIR_MODE: Final = 0o2750
_NO_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class EnrollError(HubError):
    """A device cannot be enrolled or revoked (one line says why and what to do)."""


@dataclass(frozen=True)
class Enrollment:
    """An enrolled device's bundle. Holds no password (it is in the bundle's file)."""

    device_id: str
    config: Path
    """The bundle's ``agent.toml``."""
    username: str
    """The device's broker username (its id)."""

    @property
    def bundle_dir(self) -> Path:
        """The directory holding ``agent.toml``, ``broker-password`` and ``trust.json``."""
        return self.config.parent


# --- Mosquitto password hashes ---------------------------------------------------------


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2.x's ``$7$`` hash of ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _HASH_BYTES)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(encoded: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (False for any other format)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        want = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    got = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(want))
    return hmac.compare_digest(got, want)


def _read_passwd(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise EnrollError(f"cannot read the password file {path} ({exc.strerror})") from exc


def _user_of(line: str) -> str | None:
    if not line or line.lstrip().startswith("#") or ":" not in line:
        return None
    return line.split(":", 1)[0]


def _hash_of(path: Path, user: str) -> str | None:
    for line in _read_passwd(path):
        if _user_of(line) == user:
            return line.split(":", 1)[1]
    return None


def _set_user(path: Path, user: str, encoded: str | None) -> bool:
    """Set (or, with None, remove) one user's line, keeping the others; True if changed."""
    lines = _read_passwd(path)
    kept = [line for line in lines if _user_of(line) != user]
    if encoded is not None:
        kept.append(f"{user}:{encoded}")
    elif len(kept) == len(lines):
        return False
    _write_private(path, "".join(f"{line}\n" for line in kept), broker_readable=True)
    return True


def _write_private(path: Path, data: str | bytes, *, broker_readable: bool = False) -> None:
    """Replace ``path`` atomically (temp file, fsync, rename) with mode 0600, or with
    ``broker_readable`` 0640 and the group of its directory (Mosquitto's, in the
    production layout), so the broker can read it and nobody else.

    Raises:
        EnrollError: the file cannot be written.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as f:
                if broker_readable:
                    os.fchown(f.fileno(), -1, path.parent.stat().st_gid)
                os.fchmod(f.fileno(), _BROKER_READABLE if broker_readable else _PRIVATE)
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise EnrollError(f"cannot write {path} ({exc.strerror})") from exc


def _make_broker_dir(broker_dir: Path) -> None:
    """Create ``broker_dir`` (group-readable for the broker, setgid) if it is missing."""
    if not broker_dir.exists():
        broker_dir.mkdir(parents=True)
        broker_dir.chmod(_BROKER_DIR_MODE)


@contextlib.contextmanager
def _locked(broker_dir: Path) -> Iterator[None]:
    """Serialise changes to ``broker_dir`` across processes (a lock file)."""
    try:
        _make_broker_dir(broker_dir)
        fd = os.open(broker_dir / ".enroll.lock", os.O_RDWR | os.O_CREAT, _PRIVATE)
    except OSError as exc:
        raise EnrollError(f"cannot lock {broker_dir} ({exc.strerror})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- broker directory ------------------------------------------------------------------


def ensure_acl(broker_dir: Path) -> Path:
    """Copy the deploy ACL to ``broker_dir/acl`` when there is none; returns its path.

    An existing ACL is kept (an operator may have extended it); only
    :data:`TRUST_ACL_RULE` is appended when it lacks it, since devices that cannot read
    the trust rotations refuse everything the hub signs after a key rotation.

    Raises:
        EnrollError: the deploy ACL is missing, or the copy or the addition fails.
    """
    acl = broker_dir / "acl"
    if acl.exists():
        try:
            lines = acl.read_text().splitlines()
            if TRUST_ACL_RULE not in (line.strip() for line in lines):
                rule = ["# devices read the trust rotations", TRUST_ACL_RULE, ""]
                _write_private(acl, "\n".join([*lines, *rule]), broker_readable=True)
                log.info("enroll: added %r to %s; reload the broker", TRUST_ACL_RULE, acl)
        except OSError as exc:
            raise EnrollError(f"cannot update the ACL {acl} ({exc.strerror})") from exc
        return acl
    try:
        _make_broker_dir(broker_dir)
        _write_private(acl, DEPLOY_ACL.read_bytes(), broker_readable=True)
    except (OSError, EnrollError) as exc:
        raise EnrollError(
            f"cannot install the ACL {acl} from {DEPLOY_ACL} ({exc}); "
            "copy deploy/mosquitto/acl there by hand"
        ) from exc
    return acl


def ensure_hub_account(broker_dir: Path) -> str:
    """Make sure the hub's broker account exists; returns the hub's password.

    The password is kept in ``broker_dir/hub-password`` (0600), created on first use;
    the ``edgefleet-hub`` line of ``broker_dir/passwd`` is (re)written when it is
    missing or does not match it.

    Raises:
        EnrollError: the files cannot be read or written.
    """
    with _locked(broker_dir):
        return _ensure_hub_account(broker_dir)


def _ensure_hub_account(broker_dir: Path) -> str:
    secret_file = broker_dir / "hub-password"
    try:
        password = secret_file.read_text().strip() if secret_file.exists() else ""
    except OSError as exc:
        raise EnrollError(f"cannot read {secret_file} ({exc.strerror})") from exc
    if not password:
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        _write_private(secret_file, password + "\n")
        log.info("enroll: created the hub's broker password in %s", secret_file)
    # passwd: every account (the loopback and device listeners); hub-passwd: the hub's
    # alone (the listener for a hub on another machine, where devices cannot log in).
    for passwd in (broker_dir / "passwd", broker_dir / "hub-passwd"):
        current = _hash_of(passwd, HUB_USERNAME)
        if current is None or not check_password(current, password):
            _set_user(passwd, HUB_USERNAME, hash_password(password))
            log.info("enroll: wrote the %s account to %s", HUB_USERNAME, passwd)
    return password


# --- enrolment records -----------------------------------------------------------------


@contextlib.contextmanager
def _records(store: Store) -> Iterator[sqlite3.Connection]:
    """The ``enrollments`` table of the hub database (:mod:`hub.db.schema`)."""
    conn = open_database(store.path, label=f"enrolment records {store.path}", error=EnrollError)
    try:
        yield conn
    except sqlite3.Error as exc:
        raise EnrollError(f"cannot use enrolment records in {store.path} ({exc})") from exc
    finally:
        conn.close()


def is_enrolled(device_id: str, *, store: Store) -> bool:
    """Whether the device is enrolled and not revoked.

    Raises:
        EnrollError: the store cannot be read.
    """
    with _records(store) as conn:
        row = conn.execute(
            "SELECT revoked_at FROM enrollments WHERE device_id = ?", (device_id,)
        ).fetchone()
    return row is not None and row[0] is None


def _check_id(device_id: str) -> str:
    try:
        safe_name(device_id, "device id")
    except ValidationError as exc:
        raise EnrollError(str(exc)) from exc
    if _NO_CONTROL.search(device_id):  # the name pattern's `$` lets a final "\n" pass
        raise EnrollError(f"device id: {device_id!r} holds whitespace or control characters")
    if device_id == HUB_USERNAME:
        raise EnrollError(f"device id: {HUB_USERNAME!r} is the hub's own broker account")
    return device_id


# --- enrol and revoke ------------------------------------------------------------------

_NO_TRUST_HINT: Final = (
    "; run `edgefleet hub init --data DIR` first (it creates the hub's keys) or give --trust"
)


def _read_input(path: Path, what: str, hint: str) -> bytes:
    """The bytes of an input file, read before anything is written.

    Raises:
        EnrollError: it cannot be read (one line, with ``hint``).
    """
    try:
        return path.read_bytes()
    except OSError as exc:
        raise EnrollError(f"cannot read the {what} {path} ({exc.strerror}){hint}") from exc


def enroll_device(
    device_id: str,
    *,
    tags: Sequence[str],
    store: Store,
    broker_dir: Path,
    hub_url: str,
    broker_url: str,
    trust_file: Path,
    out_dir: Path,
    data_dir: str = "/var/lib/edgefleet",
    local_api_port: int = 8765,
    broker_ca: Path | None = None,
    hub_ca: Path | None = None,
    rotate: bool = False,
    now: float | None = None,
) -> Enrollment:
    """Enrol a device: broker account, hub record and agent bundle (see the module doc).

    With ``rotate=True`` an enrolled device gets a new password (and a new bundle);
    a revoked device may be enrolled again without it. ``broker_ca`` (the CA of an
    ``mqtts://`` broker) and ``hub_ca`` (of an ``https://`` hub) are copied into the
    bundle as ``ca.pem`` and ``hub-ca.pem`` and named in its ``agent.toml``. Every input
    file is read before anything is written, so a missing one leaves no trace.

    Raises:
        EnrollError: a bad id, tag or URL; the id is already enrolled (without
            ``rotate``) or, with ``rotate``, not enrolled; the trust file, bundle,
            broker files or store cannot be read or written.
    """
    _check_id(device_id)
    clean_tags = _check_tags(tags)
    _check_urls(hub_url, broker_url)
    if not 0 <= local_api_port <= 65535:
        raise EnrollError(f"local API port {local_api_port} is not in 0..65535")
    inputs = {"trust.json": _read_input(trust_file, "trust file", _NO_TRUST_HINT)}
    if broker_ca is not None:
        inputs["ca.pem"] = _read_input(broker_ca, "broker CA", "")
    if hub_ca is not None:
        inputs["hub-ca.pem"] = _read_input(hub_ca, "hub CA", "")
    when = time.time() if now is None else now
    with _locked(broker_dir):
        enrolled = is_enrolled(device_id, store=store)
        if enrolled and not rotate:
            raise EnrollError(
                f"device {device_id!r} is already enrolled; revoke it first, or rotate its password"
            )
        if rotate and not enrolled:
            raise EnrollError(f"device {device_id!r} is not enrolled; nothing to rotate")
        ensure_acl(broker_dir)
        _ensure_hub_account(broker_dir)
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        config = _write_bundle(
            out_dir / device_id,
            device_id=device_id,
            password=password,
            tags=clean_tags,
            hub_url=hub_url,
            broker_url=broker_url,
            files=inputs,
            data_dir=data_dir,
            local_api_port=local_api_port,
        )
        _set_user(broker_dir / "passwd", device_id, hash_password(password))
        store.set_tags(device_id, clean_tags, now=when)
        with _records(store) as conn:
            conn.execute(
                "INSERT INTO enrollments (device_id, enrolled_at) VALUES (?, ?)"
                " ON CONFLICT (device_id) DO UPDATE SET"
                " enrolled_at = CASE WHEN revoked_at IS NULL THEN enrolled_at"
                " ELSE excluded.enrolled_at END,"
                " rotated_at = CASE WHEN revoked_at IS NULL THEN excluded.enrolled_at END,"
                " revoked_at = NULL",
                (device_id, when),
            )
    log.info(
        "enroll: %s %s (tags %s); bundle in %s; reload the broker",
        device_id, "rotated" if rotate else "enrolled", ",".join(clean_tags) or "-",
        config.parent,
    )  # fmt: skip
    return Enrollment(device_id=device_id, config=config, username=device_id)


def revoke_device(
    device_id: str, *, store: Store, broker_dir: Path, now: float | None = None
) -> None:
    """Remove the device's broker account and mark it revoked in the hub's records.

    The device is refused on its next connection once the broker has reloaded its
    password file (SIGHUP). Its metrics and events stay in the store.

    Raises:
        EnrollError: a bad id; the device is not enrolled; the password file or the
            store cannot be read or written.
    """
    _check_id(device_id)
    when = time.time() if now is None else now
    with _locked(broker_dir):
        if not is_enrolled(device_id, store=store):
            # still remove a stray account line, so revoking is always safe to repeat
            _set_user(broker_dir / "passwd", device_id, None)
            raise EnrollError(f"device {device_id!r} is not enrolled; nothing to revoke")
        _set_user(broker_dir / "passwd", device_id, None)
        with _records(store) as conn:
            conn.execute(
                "UPDATE enrollments SET revoked_at = ?, directive_cleared_at = NULL"
                " WHERE device_id = ?",
                (when, device_id),
            )
    log.info("enroll: %s revoked; reload the broker to refuse it", device_id)


# --- the agent bundle ------------------------------------------------------------------


def reload_broker(pid_file: Path) -> int:
    """Ask the Mosquitto whose pid is in ``pid_file`` to reread its password and ACL
    files (SIGHUP, as ``systemctl reload mosquitto`` does). Returns the pid.

    Raises:
        EnrollError: the file is unreadable or holds no pid, the process is gone, is not
            a Mosquitto, or may not be signalled by this user.
    """
    try:
        text = pid_file.read_text().strip()
    except OSError as exc:
        raise EnrollError(f"broker pid file {pid_file}: {exc.strerror}") from exc
    if not text.isdigit() or int(text) < 2:
        raise EnrollError(f"broker pid file {pid_file} holds no pid ({text[:20]!r})")
    pid = int(text)
    comm = Path(f"/proc/{pid}/comm")
    try:
        name = comm.read_text().strip()
    except FileNotFoundError:
        raise EnrollError(f"broker pid {pid} (from {pid_file}): no such process") from None
    except OSError:
        name = "mosquitto"  # no /proc details here: trust the pid file
    if name != "mosquitto":
        raise EnrollError(f"broker pid {pid} (from {pid_file}) is {name!r}, not mosquitto")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise EnrollError(f"broker pid {pid} (from {pid_file}): no such process") from None
    except PermissionError:
        raise EnrollError(
            f"broker pid {pid}: not allowed to signal it (run as its user, or use "
            "systemctl reload mosquitto)"
        ) from None
    log.info("enroll: asked mosquitto (pid %d) to reload its password file", pid)
    return pid


def _check_tags(tags: Sequence[str]) -> list[str]:
    if isinstance(tags, str):
        raise EnrollError("tags: give a list of tags, not one string")
    try:
        return sorted({safe_name(t, "tag") for t in tags})
    except ValidationError as exc:
        raise EnrollError(str(exc)) from exc


def _check_urls(hub_url: str, broker_url: str) -> None:
    for name, url in (("hub url", hub_url), ("broker url", broker_url)):
        if not isinstance(url, str) or _NO_CONTROL.search(url):
            raise EnrollError(f"{name}: {url!r} holds whitespace or control characters")
    parts = urlsplit(hub_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EnrollError(f"hub url must be http(s)://host[:port], got {hub_url!r}")
    try:
        BrokerConfig.from_url(broker_url)
    except ValidationError as exc:
        raise EnrollError(str(exc)) from exc


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string (ASCII, escaped) is a TOML basic string


def _write_bundle(
    bundle: Path,
    *,
    device_id: str,
    password: str,
    tags: list[str],
    hub_url: str,
    broker_url: str,
    files: dict[str, bytes],
    data_dir: str,
    local_api_port: int,
) -> Path:
    """Write ``agent.toml``, ``broker-password`` and ``files`` (``trust.json``, and the
    CAs when given); returns the config.

    Raises:
        EnrollError: the bundle cannot be written.
    """
    try:
        bundle.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise EnrollError(f"cannot create the bundle directory {bundle} ({exc.strerror})") from exc
    config = bundle / "agent.toml"
    lines = [
        f"# EdgeFleet agent config for {device_id}, written by `edgefleet device enroll`.",
        f"# Hub: {hub_url}",
        "# Install with the files beside it (broker-password, trust.json, CAs), mode 0600.",
        f"device_id = {_toml_str(device_id)}",
        f"data_dir = {_toml_str(data_dir)}",
        'trust_file = "trust.json"',
        f"tags = [{', '.join(_toml_str(t) for t in tags)}]",
        "",
        "[broker]",
        f"url = {_toml_str(broker_url)}",
        f"username = {_toml_str(device_id)}",
        'password_file = "broker-password"',
    ]
    if "ca.pem" in files:
        lines.append('ca_file = "ca.pem"')
    if "hub-ca.pem" in files:
        lines += ["", "[download]", 'ca_file = "hub-ca.pem"']
    lines += ["", "[local_api]", f"port = {int(local_api_port)}", ""]
    _write_private(bundle / "broker-password", password + "\n")
    for name, data in files.items():
        _write_private(bundle / name, data)
    _write_private(config, "\n".join(lines))
    return config
