"""Hub commands as pipelines use them: device enroll/revoke and token create."""

from __future__ import annotations

import json
import stat

from click.testing import CliRunner

from edge_agent.cli import _load_plugins, cli
from edge_agent.config import AgentConfig

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
    assert stat.S_IMODE((data / "broker" / "passwd").stat().st_mode) == 0o600
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
