"""Package boundaries: the rooms of docs/architecture.md and the only arrows allowed
between them. A device installs only the agent, so it never imports the hub; the hub
imports the agent's wire contract and an explicit allow-list, nothing else; the console
talks to the hub only through the client."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(package: Path) -> dict[str, set[str]]:
    """Per source file (relative path), the absolute modules it imports, with ``from m
    import a`` also giving ``m.a`` (a submodule or a name: both are checked)."""
    out: dict[str, set[str]] = {}
    for path in sorted(package.rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
        out[str(path.relative_to(ROOT))] = names
    return out


def agent_imports(package: Path) -> dict[str, set[str]]:
    """Per file, what it imports from edge_agent."""
    return {
        f: {n for n in names if n == "edge_agent" or n.startswith("edge_agent.")}
        for f, names in imported_modules(package).items()
    }


#: What the hub may import of the agent: the wire contract, the package's errors and
#: small shared helpers, the inference room (the hub loads every model in the runtime
#: before signing), the CLI group it registers into, and one MQTT-client helper.
HUB_MAY_IMPORT = (
    "edge_agent.contract",
    "edge_agent.errors",
    "edge_agent.durable",
    "edge_agent.urls",
    "edge_agent.inference",
    "edge_agent.cli.EdgeFleetGroup",
    "edge_agent.cli.needs_extra",
    "edge_agent.__version__",
    "edge_agent.daemon.config.BrokerConfig",
    "edge_agent.daemon.link.configure_client",
)
#: The demo runs real agents: it alone may import the daemon.
DEMO_MAY_IMPORT = ("edge_agent.daemon",)


def _allowed(name: str, allowed: tuple[str, ...]) -> bool:
    if name in (
        "edge_agent",
        "edge_agent.daemon",
        "edge_agent.daemon.config",
        "edge_agent.daemon.link",
        "edge_agent.cli",
    ):
        return True  # the module of an allowed name (checked by its names)
    return any(name == a or name.startswith(a + ".") for a in allowed)


def test_the_hub_imports_only_the_contract_and_an_allow_list_of_the_agent():
    bad = {
        f: sorted(
            n
            for n in names
            if not _allowed(n, HUB_MAY_IMPORT + (DEMO_MAY_IMPORT if "demo" in f else ()))
        )
        for f, names in agent_imports(ROOT / "hub").items()
    }
    bad = {f: n for f, n in bad.items() if n}
    assert not bad, f"hub imports agent internals outside the allow-list: {bad}"


def test_the_contract_is_pure():
    """The wire contract imports no database, network, MQTT or daemon code."""
    forbidden = {"sqlite3", "sqlite_utils", "paho", "httpx", "socket"}
    for f, names in imported_modules(ROOT / "edge_agent" / "contract").items():
        tops = {n.split(".")[0] for n in names}
        assert not tops & forbidden, f"{f} imports {sorted(tops & forbidden)}"
        agent = {n for n in names if n.startswith("edge_agent.")}
        outside = {
            n for n in agent if not n.startswith(("edge_agent.contract", "edge_agent.errors"))
        }
        assert not outside, f"{f} imports {sorted(outside)}"


def test_inference_does_not_import_the_daemon():
    for f, names in agent_imports(ROOT / "edge_agent" / "inference").items():
        daemon = {n for n in names if n.startswith("edge_agent.daemon")}
        assert not daemon, f"{f} imports {sorted(daemon)}"


def imported_top_levels(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def run_child(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing imported yet); returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return proc.stdout.strip()


def test_agent_source_never_imports_hub_or_tui():
    assert not imported_top_levels(ROOT / "edge_agent") & {"hub", "tui"}


def test_agent_source_avoids_heavy_dependencies():
    heavy = {"fastapi", "uvicorn", "starlette", "textual", "amqtt", "tflite", "flatbuffers"}
    assert not imported_top_levels(ROOT / "edge_agent") & heavy


def test_agent_cli_works_when_hub_cannot_be_imported():
    """With `hub` unimportable, the agent's commands still run (as on a device)."""
    code = (
        "import sys; sys.modules['hub'] = None\n"
        "from edge_agent import cli\n"
        "from edge_agent.contract import bundle, trust\n"
        "from edge_agent.inference import model, runtime\n"
        "cli._load_plugins(cli.cli)\n"
        "print(sorted(cli.cli.commands))\n"
    )
    commands = run_child(code)
    assert "'bundle'" in commands
    assert "'keys'" not in commands  # the hub's commands are absent...
    assert "'hub'" in commands  # ...and `edgefleet hub` says what to install


def test_agent_imports_httpx_only_to_download_and_without_its_cli():
    """httpx is loaded at the first download, still works, and leaves its CLI (rich...) out."""
    code = (
        "import sys\n"
        "from edge_agent.daemon import agent\n"
        "assert 'httpx' not in sys.modules, 'httpx imported at startup'\n"
        "agent.skip_httpx_cli()\n"
        "from edge_agent.daemon.download import download_bundle\n"
        "import httpx\n"
        "assert callable(download_bundle) and httpx.Client and httpx.Timeout(1.0)\n"
        "assert 'httpx._main' not in sys.modules or sys.modules['httpx._main'] is None\n"
        "assert not {'rich', 'pygments'} & set(sys.modules), 'httpx CLI imported'\n"
        "assert isinstance(agent.trim_malloc(), bool)\n"
        "print('ok')\n"
    )
    assert run_child(code) == "ok"


def test_skip_httpx_cli_leaves_an_imported_httpx_alone():
    code = (
        "import sys, httpx\n"
        "from edge_agent.daemon import agent\n"
        "agent.skip_httpx_cli()\n"
        "assert sys.modules.get('httpx._main', 'absent') is not None\n"
        "print('ok')\n"
    )
    assert run_child(code) == "ok"


def test_the_agent_verifies_signatures_without_importing_cryptography():
    """The daemon's verification path (trust file, bundle) leaves cryptography unloaded:
    Ed25519 goes through the libcrypto that ``ssl`` already maps (~7 MB less RSS)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.contract.ed25519 import PublicKey

    code = (
        "import sys\n"
        "from edge_agent.contract.trust import TrustRoot\n"
        "from edge_agent.daemon import agent\n"
        "from edge_agent.contract import bundle\n"
        "from edge_agent.contract.ed25519 import PublicKey\n"
        "assert PublicKey(bytes.fromhex(sys.argv[1])).verify(bytes.fromhex(sys.argv[2]), b'm')\n"
        "print('cryptography' in sys.modules)\n"
    )
    key = Ed25519PrivateKey.generate()
    raw = PublicKey.of(key.public_key()).raw
    assert run_child(code, raw.hex(), key.sign(b"m").hex()) == "False"


def test_the_hub_client_imports_neither_hub_nor_agent():
    """edgefleet_client installs with the console extra alone (httpx, no FastAPI)."""
    names = imported_top_levels(ROOT / "edgefleet_client")
    assert not names & {"hub", "edge_agent", "tui", "fastapi", "starlette", "pydantic"}


def test_the_console_imports_only_the_client_textual_and_the_stdlib():
    """tui talks to the hub only through edgefleet_client (never hub or edge_agent)."""
    allowed = {"edgefleet_client", "tui", "textual", "textual_plot", "textual_hires_canvas", "rich"}
    allowed |= {"click"}  # the command's registration (a core dependency)
    names = imported_top_levels(ROOT / "tui")
    assert names, "tui has no source"
    outside = {n for n in names - allowed if n not in sys.stdlib_module_names}
    assert not outside, f"tui imports {sorted(outside)}"


def test_the_console_loads_without_hub_or_agent_internals():
    """Importing the console app (with hub and edge_agent unimportable) works."""
    code = (
        "import sys; sys.modules['hub'] = None; sys.modules['edge_agent'] = None\n"
        "import tui.app, tui.cli, edgefleet_client\n"
        "print('ok')\n"
    )
    assert run_child(code) == "ok"


def test_only_the_hubs_commands_use_the_hub_client():
    """The CLI's remote commands talk to a hub through edgefleet_client; the service
    itself never imports its own client."""
    users = sorted(
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "hub").rglob("*.py")
        if "edgefleet_client" in imported_top_levels_of(path)
    )
    assert users, "hub/cli no longer uses edgefleet_client"
    assert all(u.startswith("hub/cli/") for u in users), users


def imported_top_levels_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_loading_the_hubs_commands_leaves_httpx_unloaded():
    """`edgefleet agent run` registers every command group before it starts: the hub's
    load httpx (through the client) only when a remote command runs."""
    code = (
        "import sys\n"
        "from edge_agent import cli\n"
        "import hub.cli\n"
        "hub.cli.register(cli.cli)\n"
        "print(sorted({'httpx', 'edgefleet_client'} & set(sys.modules)))\n"
    )
    assert run_child(code) == "[]"


def test_registering_the_console_loads_neither_textual_nor_the_client():
    """The console's command is registered on every `edgefleet` start (the agent daemon's
    too): registering it must not load textual, the client or httpx."""
    code = (
        "import sys, click\n"
        "import tui.cli\n"
        "tui.cli.register(click.Group())\n"
        "print(sorted({'textual', 'edgefleet_client', 'httpx'} & set(sys.modules)))\n"
    )
    assert run_child(code) == "[]"
