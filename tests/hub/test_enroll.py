"""Device enrolment and revocation, against a real Mosquitto started from deploy/mosquitto."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.daemon.config import AgentConfig
from hub.enroll import (
    DEPLOY_ACL,
    HUB_USERNAME,
    TRUST_ACL_RULE,
    EnrollError,
    check_password,
    enroll_device,
    ensure_hub_account,
    hash_password,
    is_enrolled,
    reload_broker,
    revoke_device,
)
from hub.keys import init_keys
from hub.store import Store
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)

HUB_URL = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def mosquitto(tmp_path_factory):
    # no accounts rendered: the test's enrolments write the password file, then reload
    with Mosquitto(tmp_path_factory.mktemp("mosquitto"), {}) as m:
        yield m


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "hub.db") as s:
        yield s


@pytest.fixture
def enroll(store, trust_file, tmp_path):
    def do(device_id: str, broker_dir=None, **kw):
        return enroll_device(
            device_id,
            tags=kw.pop("tags", ["site-a"]),
            store=store,
            broker_dir=broker_dir or tmp_path / "broker",
            hub_url=HUB_URL,
            broker_url=kw.pop("broker_url", "mqtt://127.0.0.1:1883"),
            trust_file=trust_file,
            out_dir=tmp_path / "out",
            **kw,
        )

    return do


def connect(m: Mosquitto, user: str, password: str | None) -> mqtt.ReasonCode:
    """Connect once with a new client; the broker's CONNACK reason."""
    done = threading.Event()
    result: dict[str, mqtt.ReasonCode] = {}
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"probe-{user}-{time.monotonic_ns()}",
        protocol=mqtt.MQTTv311,
    )
    c.username_pw_set(user, password)

    def on_connect(cl, ud, flags, reason, props):
        result["reason"] = reason
        done.set()

    c.on_connect = on_connect
    c.connect(m.host, m.port)
    c.loop_start()
    try:
        assert done.wait(60), f"no CONNACK for {user} in 60 s"
    finally:
        c.disconnect()
        c.loop_stop()
    return result["reason"]


def reload_until(m: Mosquitto, ok: Callable[[], bool]) -> None:
    """SIGHUP the broker (it rereads its password file), then wait until ``ok()``."""
    assert m.proc is not None
    m.proc.send_signal(signal.SIGHUP)
    assert_eventually(m, ok)


def assert_eventually(m: Mosquitto, ok: Callable[[], bool]) -> None:
    """Poll ``ok()`` (a broker reload signals nothing a client can wait on)."""
    deadline = time.monotonic() + 60
    while not ok():
        assert time.monotonic() < deadline, "\n".join(m.log[-20:])
        time.sleep(0.1)


def bundle_password(enrollment) -> str:
    return (enrollment.bundle_dir / "broker-password").read_text().strip()


def test_hash_matches_mosquitto_passwd(tmp_path):
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not shutil.which(tool):
        if os.environ.get("CI"):  # .ci/run installs mosquitto, which brings the tool
            pytest.fail("mosquitto_passwd is not installed (.ci/run installs mosquitto)")
        pytest.skip("mosquitto_passwd is not installed (apt-get install mosquitto)")
    f = tmp_path / "pw"
    f.write_text("")
    subprocess.run([tool, "-b", str(f), "u", "s3cret"], check=True, capture_output=True)
    theirs = f.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$101$")
    assert check_password(theirs, "s3cret") and not check_password(theirs, "s3creT")
    ours = hash_password("s3cret")
    assert ours.split("$")[:3] == theirs.split("$")[:3] and len(ours) == len(theirs)
    assert check_password(ours, "s3cret")


def test_enrolled_device_connects_with_its_credentials(mosquitto, enroll):
    e = enroll("enr-ok", broker_dir=mosquitto.dir)
    password = bundle_password(e)
    reload_until(mosquitto, lambda: not connect(mosquitto, "enr-ok", password).is_failure)
    hub_password = ensure_hub_account(mosquitto.dir)
    assert not connect(mosquitto, HUB_USERNAME, hub_password).is_failure


def test_wrong_password_refused(mosquitto, enroll):
    e = enroll("enr-wrong", broker_dir=mosquitto.dir)
    reload_until(
        mosquitto, lambda: not connect(mosquitto, "enr-wrong", bundle_password(e)).is_failure
    )
    assert connect(mosquitto, "enr-wrong", bundle_password(e) + "x").is_failure
    assert connect(mosquitto, "enr-wrong", None).is_failure


def test_revoked_device_cannot_connect(mosquitto, enroll, store):
    e = enroll("enr-revoked", broker_dir=mosquitto.dir)
    password = bundle_password(e)
    reload_until(mosquitto, lambda: not connect(mosquitto, "enr-revoked", password).is_failure)
    revoke_device("enr-revoked", store=store, broker_dir=mosquitto.dir)
    assert not is_enrolled("enr-revoked", store=store)
    reload_until(mosquitto, lambda: connect(mosquitto, "enr-revoked", password).is_failure)
    with pytest.raises(EnrollError, match="not enrolled"):
        revoke_device("enr-revoked", store=store, broker_dir=mosquitto.dir)


def test_reenrolling_an_existing_id_is_refused(enroll, tmp_path, store):
    first = enroll("dev-1")
    old = bundle_password(first)
    with pytest.raises(EnrollError, match="already enrolled") as info:
        enroll("dev-1")
    assert "\n" not in str(info.value)
    assert bundle_password(first) == old  # the refused attempt changed nothing
    rotated = enroll("dev-1", rotate=True)
    new = bundle_password(rotated)
    assert new != old
    line = (tmp_path / "broker" / "passwd").read_text()
    assert line.count("dev-1:") == 1
    assert check_password(line.split("dev-1:", 1)[1].split("\n")[0], new)
    with pytest.raises(EnrollError, match="not enrolled"):
        enroll("dev-2", rotate=True)
    revoke_device("dev-1", store=store, broker_dir=tmp_path / "broker")
    enroll("dev-1")  # a revoked id may be enrolled again
    assert is_enrolled("dev-1", store=store)


def test_password_never_in_repr_or_logs(enroll, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)
    e = enroll("dev-quiet")
    rotated = enroll("dev-quiet", rotate=True)
    hub_password = ensure_hub_account(tmp_path / "broker")
    secrets_ = [bundle_password(e), hub_password]
    assert len(secrets_[0]) >= 32 and len(hub_password) >= 32
    assert caplog.records  # enrolment does log
    for s in secrets_:
        assert s not in repr(e) and s not in repr(rotated) and s not in str(e)
        assert s not in caplog.text
    with pytest.raises(EnrollError) as info:
        enroll("dev-quiet")
    assert all(s not in str(info.value) for s in secrets_)


@pytest.mark.parametrize("bad", ["../x", "a/b", "+", "#", "..", "", "dev\n", "a b", HUB_USERNAME])
def test_path_tricks_in_device_id_refused(enroll, bad, tmp_path, store):
    why = "is the hub's own broker account" if bad == HUB_USERNAME else "is not a valid name"
    with pytest.raises(EnrollError, match=f"^device id: .* {why}"):
        enroll(bad)
    with pytest.raises(EnrollError, match=f"^device id: .* {why}"):
        revoke_device(bad, store=store, broker_dir=tmp_path / "broker")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "x").exists()


def test_password_file_is_readable_by_the_broker_group_only(enroll, tmp_path):
    """The password file and ACL: 0640 with the broker directory's group (Mosquitto's,
    in the production layout); the hub's and the device's passwords: 0600."""
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    os.chown(broker_dir, -1, 1)  # a group other than the process's, as `mosquitto` is
    (broker_dir / "passwd").write_text("# kept\nother:$7$101$abc$def\n")
    e = enroll("dev-p", broker_dir=broker_dir)
    for f in (broker_dir / "passwd", broker_dir / "acl"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o640, f
        assert f.stat().st_gid == 1, f
    for f in (broker_dir / "hub-password", e.bundle_dir / "broker-password"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    lines = (broker_dir / "passwd").read_text().splitlines()
    assert lines[:2] == ["# kept", "other:$7$101$abc$def"]  # other users' lines are kept
    assert {ln.split(":")[0] for ln in lines[2:]} == {HUB_USERNAME, "dev-p"}
    assert not [p for p in broker_dir.iterdir() if p.name.startswith(".passwd.")]  # no temp


def test_bundle_loads_as_agent_config(enroll, store, tmp_path, trust_file):
    e = enroll("pump-017", tags=["pumps", "site-a"], broker_url="mqtts://broker.example:8883")
    assert e.device_id == e.username == "pump-017"
    assert e.config == tmp_path / "out" / "pump-017" / "agent.toml"
    cfg = AgentConfig.load(e.config)
    assert cfg.device_id == "pump-017" and cfg.tags == ("pumps", "site-a")
    assert cfg.broker.host == "broker.example" and cfg.broker.port == 8883 and cfg.broker.tls
    assert cfg.broker.username == "pump-017" and cfg.broker.password == bundle_password(e)
    assert cfg.trust_file.read_bytes() == trust_file.read_bytes()
    assert cfg.local_api_port == 8765
    record = store.device("pump-017")
    assert record is not None and record.tags == ("pumps", "site-a")
    assert record.enrolled_at is not None
    assert (tmp_path / "broker" / "acl").read_text() == DEPLOY_ACL.read_text()


def test_acl_written_before_trust_rotations_gains_only_their_read_rule(enroll, tmp_path):
    """Devices that cannot read the rotations would refuse all the hub signs after one."""
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    before = [line for line in DEPLOY_ACL.read_text().splitlines() if "v1/trust" not in line]
    old = "\n".join([*before, "user ops", "topic read edgefleet/v1/#", ""])
    (broker_dir / "acl").write_text(old)
    enroll("pump-1")
    text = (broker_dir / "acl").read_text()
    assert text.startswith(old)
    assert text[len(old) :].splitlines() == ["# devices read the trust rotations", TRUST_ACL_RULE]
    enroll("pump-2")
    assert (broker_dir / "acl").read_text() == text  # added once


def test_hub_account_is_stable(tmp_path):
    broker_dir = tmp_path / "broker"
    first = ensure_hub_account(broker_dir)
    passwd = (broker_dir / "passwd").read_text()
    assert ensure_hub_account(broker_dir) == first
    assert (broker_dir / "passwd").read_text() == passwd  # nothing rewritten
    (broker_dir / "passwd").write_text("")
    assert ensure_hub_account(broker_dir) == first  # the missing line is restored
    line = (broker_dir / "passwd").read_text().strip()
    assert check_password(line.split(":", 1)[1], first)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"broker_url": "http://x"}, "broker url"),
        ({"tags": ["ok", "bad tag"]}, "tag"),
        ({"tags": "site-a"}, "list"),
    ],
)
def test_bad_inputs_refused_in_one_line(enroll, kw, match):
    with pytest.raises(EnrollError, match=match) as info:
        enroll("dev-x", **kw)
    assert "\n" not in str(info.value)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def test_cli_enroll_and_revoke_reload_mosquitto_through_its_pid_file(tmp_path):
    """The hub's data dir holds the broker's files; --reload-pid-file makes them live."""
    data = tmp_path / "hub"
    init_keys(data / "keys")
    with Mosquitto(data / "broker", {"edgefleet-hub": "h"}) as m:
        assert m.proc is not None
        pid_file = tmp_path / "mosquitto.pid"
        pid_file.write_text(f"{m.proc.pid}\n")
        r = _cli(
            "device",
            "enroll",
            "cli-dev",
            "--data",
            str(data),
            "--json",
            "--reload-pid-file",
            str(pid_file),
        )
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["broker_reloaded"] is True
        password = (data / "enrolled" / "cli-dev" / "broker-password").read_text().strip()
        assert_eventually(m, lambda: not connect(m, "cli-dev", password).is_failure)
        r = _cli(
            "device", "revoke", "cli-dev", "--data", str(data), "--reload-pid-file", str(pid_file)
        )
        assert r.returncode == 0 and "broker reloaded" in r.stdout, r.stderr
        assert_eventually(m, lambda: connect(m, "cli-dev", password).is_failure)


@pytest.mark.parametrize(
    ("content", "match"),
    [("not-a-pid", "holds no pid"), ("999999999", "no such process"), ("self", "not mosquitto")],
)
def test_reload_refuses_a_pid_file_that_does_not_name_mosquitto(tmp_path, content, match):
    pid_file = tmp_path / "pid"
    pid_file.write_text(str(os.getpid()) if content == "self" else content)
    with pytest.raises(EnrollError, match=match):
        reload_broker(pid_file)
    with pytest.raises(EnrollError, match="No such file"):
        reload_broker(tmp_path / "missing.pid")


def test_cli_says_in_one_line_that_the_change_is_saved_but_not_live(tmp_path):
    data = tmp_path / "hub"
    init_keys(data / "keys")
    r = _cli(
        "device",
        "enroll",
        "cli-dev2",
        "--data",
        str(data),
        "--reload-pid-file",
        str(tmp_path / "missing.pid"),
    )
    assert r.returncode == 1
    assert "saved, but the broker was not reloaded" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (data / "enrolled" / "cli-dev2" / "agent.toml").exists()


def test_the_acl_ships_inside_the_package_and_deploy_links_to_it():
    """A wheel install (no repository checkout) must still find the ACL enrolment copies;
    ``deploy/mosquitto/acl`` is the same file, not a second copy that could drift."""
    import hub

    package = Path(hub.__file__).resolve().parent
    assert DEPLOY_ACL.parent == package and DEPLOY_ACL.is_file()
    repo = package.parent
    assert (repo / "deploy" / "mosquitto" / "acl").resolve() == DEPLOY_ACL
    pyproject = (repo / "pyproject.toml").read_text()
    assert '"mosquitto.acl"' in pyproject.split("[tool.setuptools.package-data]")[1]
