"""Hub commands as pipelines use them: device enroll/revoke and token create."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import _load_plugins, cli
from edge_agent.daemon.config import AgentConfig

_load_plugins(cli)


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_enroll_writes_a_loadable_private_agent_config_and_revoke_removes_the_account(tmp_path):
    data = tmp_path / "hub"
    assert run("keys", "init", "--dir", str(data / "keys")).exit_code == 0
    result = run("device", "enroll", "pump-1", "--data", str(data), "--tags", "a,b", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    config = AgentConfig.load(data / "enrolled" / "pump-1" / "agent.toml")
    assert config.device_id == "pump-1" and config.broker.username == "pump-1"
    assert config.broker.password and config.broker.password not in result.stdout
    assert stat.S_IMODE((data / "broker" / "passwd").stat().st_mode) == 0o640  # broker's group
    assert stat.S_IMODE((data / "broker").stat().st_mode) & 0o007 == 0  # nobody else
    assert info["username"] == "pump-1"
    assert "pump-1:" in (data / "broker" / "passwd").read_text()
    again = run("device", "enroll", "pump-1", "--data", str(data))
    assert again.exit_code == 1 and "already enrolled" in again.stderr
    assert run("device", "revoke", "pump-1", "--data", str(data)).exit_code == 0
    assert "pump-1:" not in (data / "broker" / "passwd").read_text()


def test_enroll_refuses_path_tricks_in_one_line(tmp_path):
    data = tmp_path / "hub"
    run("keys", "init", "--dir", str(data / "keys"))
    result = run("device", "enroll", "../etc", "--data", str(data))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "not a valid name" in result.stderr
    assert not (tmp_path / "etc").exists()


def test_token_create_prints_the_secret_once(tmp_path):
    result = run(
        "hub",
        "token",
        "create",
        "--data",
        str(tmp_path),
        "--name",
        "ci",
        "--scope",
        "deploy",
        "--json",
    )
    assert result.exit_code == 0
    token = json.loads(result.stdout)["token"]
    assert token.startswith("efb_")
    assert token.split("_", 2)[2].encode() not in (tmp_path / "hub.db").read_bytes()


def test_enroll_before_the_hub_has_keys_says_what_to_run_and_writes_nothing(tmp_path):
    data = tmp_path / "hub"
    result = run("device", "enroll", "pump-1", "--data", str(data))
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and f"edgefleet hub init --data {data}" in result.stderr
    assert not data.exists()


def test_hub_init_then_enroll_with_tls_options_writes_a_working_agent_config(tmp_path):
    data, broker, tls = tmp_path / "hub", tmp_path / "mosquitto", tmp_path / "tls"
    made = run("hub", "tls", "--out", str(tls), "--host", "127.0.0.1", "--host", "hub.example")
    assert made.exit_code == 0, made.stderr
    init = run("hub", "init", "--data", str(data), "--broker-dir", str(broker))
    assert init.exit_code == 0, init.stderr
    assert (data / "keys" / "trust.json").exists() and (broker / "hub-password").exists()
    assert "edgefleet-hub:" in (broker / "passwd").read_text()
    again = run("hub", "init", "--data", str(data), "--broker-dir", str(broker))
    assert "keys     kept" in again.stdout  # idempotent: the keys are not replaced
    result = run(
        "device", "enroll", "pump-2", "--data", str(data), "--broker-dir", str(broker),
        "--broker-url", "mqtts://127.0.0.1:8883", "--hub-url", "https://hub.example:8700",
        "--broker-ca", str(tls / "ca.crt"), "--hub-ca", str(tls / "ca.crt"),
        "--device-data-dir", "/srv/edgefleet", "--local-api-port", "9000",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    config = AgentConfig.load(data / "enrolled" / "pump-2" / "agent.toml")
    assert config.broker.tls and config.broker.ca_file is not None
    assert config.broker.ca_file.read_bytes() == (tls / "ca.crt").read_bytes()
    assert config.download_ca_file is not None
    assert config.download_ca_file.read_bytes() == (tls / "ca.crt").read_bytes()
    assert config.data_dir == Path("/srv/edgefleet") and config.local_api_port == 9000
    assert "pump-2:" in (broker / "passwd").read_text()
    assert not (data / "broker").exists()  # everything went to --broker-dir


def test_hub_tls_refuses_a_bad_host_and_writes_nothing(tmp_path):
    result = run("hub", "tls", "--out", str(tmp_path / "tls"), "--host", "bad host!")
    assert result.exit_code == 1 and "neither an IP address nor a DNS name" in result.stderr
    assert not (tmp_path / "tls").exists()


def test_model_drift_prints_each_verdict_with_its_evidence():
    import numpy as np

    from edgefleet_client import DriftResult
    from hub.cli.model import drift_lines
    from hub.drift import drift_decision, drift_report
    from tests.hub.test_drift import REF, device_window

    x = np.random.default_rng(1).normal(size=(3000, 3))
    x[:, 0] += 1.0
    report = drift_report(REF, [device_window(x)])
    answer = {
        "model": "m",
        "version": 1,
        "since": None,
        "n": report.n,
        "decision": report.decision.to_json(),
        "report": report.to_json(),
    }
    lines = drift_lines(DriftResult.from_json(answer))
    assert lines[0].startswith("drift    m v1: 3000 predictions; major: f0 chi2")
    assert "alpha 0.01 family-wise (Holm)" in lines[1] and "PSI >= 0.1 or JS >= 0.1" in lines[1]
    f0 = next(line for line in lines[2:] if " f0 " in line)
    assert f0.startswith("major") and "n 3000 of" in f0 and "chi2" in f0 and " df " in f0
    f2 = next(line for line in lines[2:] if " f2 " in line)
    assert f2.split()[0] in ("none", "minor")
    empty = {
        "model": "m",
        "version": 1,
        "since": 5.0,
        "n": 0,
        "decision": drift_decision(REF, []).to_json(),
        "report": None,
    }
    (line,) = drift_lines(DriftResult.from_json(empty))
    assert "since 5" in line and "waiting for evidence: 0 of " in line


def test_rollout_wait_says_what_it_waits_for():
    from edgefleet_client import Rollout
    from hub.cli.rollout import waiting_for
    from hub.rollouts import Gates, RolloutSpec, Stage

    spec = RolloutSpec(
        id="r1", model="pump", target_version=2, previous_version=1,
        stages=(Stage(share=0.1, bake_s=300, gates=Gates()), Stage(share=1.0, bake_s=300,
                                                                    gates=Gates())),
    ).to_json()  # fmt: skip
    r = {
        "spec": spec,
        "stage": 0,
        "state": "running",
        "stage_started_at": 1.0,
        "history": [],
        "touched": ["pump-1"],
        "gates": [
            {"name": "success_share", "value": 1.0, "limit": 0.95, "verdict": "pass"},
            {"name": "bake", "value": 40.0, "limit": 300.0, "verdict": "waiting", "detail": ""},
            {"name": "drift", "value": None, "limit": None, "verdict": "waiting",
             "detail": "waiting for evidence: 40 of 133 predictions"},
        ],
    }  # fmt: skip
    line = waiting_for(Rollout.from_json(r))
    assert line.startswith("stage 1/2 (10 %) running")
    assert "bake: waiting (40.0 of 300.0)" in line
    assert "drift: waiting (waiting for evidence: 40 of 133 predictions)" in line
    assert "success_share" not in line  # passed gates are not what it waits for
    assert "activating" in waiting_for(Rollout.from_json({**r, "gates": []}))
