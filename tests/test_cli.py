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
