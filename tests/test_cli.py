"""The `edgefleet` command line as a pipeline uses it: exit codes, one-line errors, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edge_agent.cli import _load_plugins, cli

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    _load_plugins(cli)
    return CliRunner()


def run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, runner, demo_dir) -> Path:
    ws = tmp_path_factory.mktemp("cli")
    code, out, err = run(runner, "keys", "init", "--dir", str(ws / "keys"), "--json")
    assert code == 0, err
    key = json.loads(out)["keys"][0]["path"]
    with np.load(demo_dir / "reference.npz") as data:
        np.savez(ws / "ref.npz", x=data["x"])
    code, out, err = run(
        runner,
        "bundle",
        "build",
        str(demo_dir / "model-int8.tflite"),
        "--name",
        "pump",
        "--version",
        "1",
        "--reference",
        str(ws / "ref.npz"),
        "--key",
        key,
        "--out",
        str(ws / "pump-1.efb"),
        "--lineage",
        '{"run": "r1"}',
    )
    assert code == 0, err
    return ws


def test_verify_exits_zero_for_a_good_bundle(runner, workspace):
    code, out, _ = run(
        runner,
        "bundle",
        "verify",
        str(workspace / "pump-1.efb"),
        "--trust",
        str(workspace / "keys" / "trust.json"),
    )
    assert code == 0
    assert out.startswith("verified: pump v1")


def test_verify_exits_one_with_one_line_for_a_tampered_bundle(runner, workspace, tmp_path):
    data = bytearray((workspace / "pump-1.efb").read_bytes())
    data[data.index(b"TFL3") + 100] ^= 0x10
    bad = tmp_path / "bad.efb"
    bad.write_bytes(bytes(data))
    code, out, err = run(
        runner, "bundle", "verify", str(bad), "--trust", str(workspace / "keys" / "trust.json")
    )
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("Error: bad.efb: member 'model.tflite'")


def test_verify_against_another_trust_root_fails(runner, workspace, tmp_path):
    code, _, _ = run(runner, "keys", "init", "--dir", str(tmp_path / "other"))
    assert code == 0
    code, _, err = run(
        runner,
        "bundle",
        "verify",
        str(workspace / "pump-1.efb"),
        "--trust",
        str(tmp_path / "other" / "trust.json"),
    )
    assert code == 1
    assert "1 by unknown keys" in err


def test_inspect_json_reports_manifest_and_unverified_state(runner, workspace):
    code, out, _ = run(runner, "bundle", "inspect", str(workspace / "pump-1.efb"), "--json")
    assert code == 0
    info = json.loads(out)
    assert info["manifest"]["lineage"] == {"run": "r1"}
    assert info["verified"] is False
    assert len(info["file"]["sha256"]) == 64


def test_build_with_bad_lineage_is_a_usage_error(runner, workspace, demo_dir):
    key = next((workspace / "keys").glob("key-*.pem"))
    code, _, err = run(
        runner,
        "bundle",
        "build",
        str(demo_dir / "model-int8.tflite"),
        "--name",
        "pump",
        "--version",
        "2",
        "--reference",
        str(workspace / "ref.npz"),
        "--key",
        str(key),
        "--out",
        str(workspace / "x.efb"),
        "--lineage",
        "[1, 2]",
    )
    assert code == 2
    assert "--lineage" in err


def test_rotate_writes_a_record_and_new_trust(runner, workspace, tmp_path):
    key = next((workspace / "keys").glob("key-*.pem"))
    code, _out, err = run(
        runner,
        "keys",
        "rotate",
        "--trust",
        str(workspace / "keys" / "trust.json"),
        "--key",
        str(key),
        "--dir",
        str(tmp_path / "new"),
        "--out",
        str(tmp_path / "rot.json"),
    )
    assert code == 0, err
    doc = json.loads((tmp_path / "rot.json").read_text())
    assert doc["previous_version"] == 1 and doc["trust"]["version"] == 2


def test_console_script_entry_point_reports_errors_in_one_line(workspace, tmp_path):
    junk = tmp_path / "junk.efb"
    junk.write_bytes(b"nope")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "bundle",
            "verify",
            str(junk),
            "--trust",
            str(workspace / "keys" / "trust.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "not a bundle" in proc.stderr


#: What a device install (`pip install 'edgefleet[agent]'`) lacks. The tflite-runtime
#: environment (`make pytest-tflite`) already lacks the hub's; the model kit and amqtt are
#: installed there for other tests, so the child blocks them too (and, in the full
#: environment, everything else an agent-only install lacks).
NOT_ON_A_DEVICE = ("fastapi", "uvicorn", "orjson", "amqtt", "flatbuffers", "tflite", "textual")
ROOT = Path(__file__).resolve().parents[1]


def on_a_device(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """`edgefleet ARGS` as installed with the agent extra only (every entry point of
    pyproject.toml registered, as `tests/support/edgefleet_cli.py` does)."""
    code = (
        f"import sys; sys.modules.update(dict.fromkeys({NOT_ON_A_DEVICE!r}))\n"
        "sys.argv[0] = 'edgefleet'\n"
        "from tests.support.edgefleet_cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True, text=True, cwd=cwd, check=False, timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def test_on_a_device_install_hub_commands_name_their_extra_instead_of_a_traceback(tmp_path):
    listed = on_a_device("--help")
    assert listed.returncode == 0, listed.stderr
    assert "demo     Needs the hub extra: pip install 'edgefleet[hub]'." in listed.stdout
    assert "bundle   Inspect and verify" in listed.stdout  # the agent's own commands
    hub_help = on_a_device("hub", "--help")
    assert hub_help.returncode == 0, hub_help.stderr
    assert "serve  Needs the hub extra: pip install 'edgefleet[hub]'." in hub_help.stdout
    assert "tls    Create the fleet's private CA" in hub_help.stdout  # runs on the agent's deps
    cases = {
        ("hub", "serve", "--help"): ("edgefleet hub serve", "hub"),
        ("hub", "init", "--data", str(tmp_path / "hub")): ("edgefleet hub init", "hub"),
        ("device", "enroll", "pump-1", "--data", str(tmp_path / "hub")):
            ("edgefleet device enroll", "hub"),
        ("demo", "--dir", str(tmp_path / "demo")): ("edgefleet demo", "hub"),
        ("model", "demo", "--out", str(tmp_path / "model")): ("edgefleet model demo", "modelkit"),
    }  # fmt: skip
    for args, (command, extra) in cases.items():
        done = on_a_device(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        (line,) = done.stderr.splitlines()  # one line, no traceback
        assert line.startswith(f"Error: {command} needs the {extra} extra ("), line
        assert line.endswith(f"is missing): pip install 'edgefleet[{extra}]'"), line
        assert done.stdout == ""
    assert not any(tmp_path.iterdir())  # nothing was written


def test_on_a_device_install_the_agents_and_the_remote_commands_still_run(tmp_path):
    keys = on_a_device("keys", "init", "--dir", str(tmp_path / "keys"), "--json")
    assert keys.returncode == 0, keys.stderr
    assert json.loads(keys.stdout)["threshold"] == 1
    remote = on_a_device("rollout", "list", "--hub", "http://127.0.0.1:9", "--token-env", "T")
    assert remote.returncode == 1  # it ran: no token, said in one line
    assert remote.stderr.splitlines() == [
        "Error: set T to an API token (edgefleet hub token create)"
    ]


def test_a_missing_optional_module_at_run_time_names_its_extra_in_one_line():
    """A command whose extra is missing but was not declared (a new import) still fails
    in one line naming the extra; a missing module of no extra is a bug and shows as one."""
    from edge_agent.cli import EdgeFleetGroup

    group = EdgeFleetGroup("g")

    @group.command("needs-orjson")
    def needs_orjson() -> None:
        raise ModuleNotFoundError("No module named 'orjson'", name="orjson")

    @group.command("broken")
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'hub.nothing'", name="hub.nothing")

    done = CliRunner().invoke(group, ["needs-orjson"])
    assert done.exit_code == 1
    assert done.stderr.splitlines() == [
        "Error: g needs-orjson needs the hub extra (orjson is missing): "
        "pip install 'edgefleet[hub]'"
    ]
    bug = CliRunner().invoke(group, ["broken"])
    assert isinstance(bug.exception, ModuleNotFoundError)
