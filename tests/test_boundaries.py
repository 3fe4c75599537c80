"""Package boundaries: a device installs only the agent, so it must never import the hub."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_top_levels(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_agent_source_never_imports_hub_or_tui():
    assert not imported_top_levels(ROOT / "edge_agent") & {"hub", "tui"}


def test_agent_source_avoids_heavy_dependencies():
    heavy = {"fastapi", "uvicorn", "starlette", "textual", "amqtt", "tflite", "flatbuffers"}
    assert not imported_top_levels(ROOT / "edge_agent") & heavy


def test_agent_cli_works_when_hub_cannot_be_imported():
    """With `hub` unimportable, the agent's commands still run (as on a device)."""
    code = (
        "import sys; sys.modules['hub'] = None\n"
        "from edge_agent import cli, bundle, trust, model, runtime\n"
        "cli._load_plugins(cli.cli)\n"
        "print(sorted(cli.cli.commands))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    commands = proc.stdout.strip()
    assert "'bundle'" in commands
    assert "'keys'" not in commands  # the hub's commands are absent...
    assert "'hub'" in commands  # ...and `edgefleet hub` says what to install


def test_agent_imports_httpx_only_to_download_and_without_its_cli():
    """httpx is loaded at the first download, still works, and leaves its CLI (rich...) out."""
    code = (
        "import sys\n"
        "from edge_agent import agent\n"
        "assert 'httpx' not in sys.modules, 'httpx imported at startup'\n"
        "agent.skip_httpx_cli()\n"
        "from edge_agent.download import download_bundle\n"
        "import httpx\n"
        "assert callable(download_bundle) and httpx.Client and httpx.Timeout(1.0)\n"
        "assert 'httpx._main' not in sys.modules or sys.modules['httpx._main'] is None\n"
        "assert not {'rich', 'pygments'} & set(sys.modules), 'httpx CLI imported'\n"
        "assert isinstance(agent.trim_malloc(), bool)\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert proc.stdout.strip() == "ok"


def test_skip_httpx_cli_leaves_an_imported_httpx_alone():
    code = (
        "import sys, httpx\n"
        "from edge_agent import agent\n"
        "agent.skip_httpx_cli()\n"
        "assert sys.modules.get('httpx._main', 'absent') is not None\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert proc.stdout.strip() == "ok"
