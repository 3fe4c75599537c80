"""The hub's container image and compose file (deploy/container/): they cannot be built
here (no container runtime), so what can be checked is: the compose file parses, and
every path and every `edgefleet` command and option they name exists."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import click
import pytest

from edge_agent import cli

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = ROOT / "deploy" / "container"
COMPOSE = CONTAINER / "compose.yaml"
DOCKERFILE = CONTAINER / "hub.Dockerfile"


def load_compose() -> dict:
    yaml = pytest.importorskip("yaml", reason="PyYAML parses compose.yaml")
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def edgefleet() -> click.Group:
    cli._load_plugins(cli.cli)
    return cli.cli


def check_command(args: list[str]) -> None:
    """``args`` (after ``edgefleet``) name an existing command and only its options."""
    group: click.Command = edgefleet()
    words = list(args)
    path = ["edgefleet"]
    while isinstance(group, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        sub = group.commands.get(name)
        assert sub is not None, f"{' '.join(path)} has no command {name!r}"
        group, path = sub, [*path, name]
    assert not isinstance(group, click.Group), f"{' '.join(path)} needs a subcommand"
    known = {o for p in group.params for o in getattr(p, "opts", [])}
    for word in words:
        if word.startswith("--"):
            assert word.split("=")[0] in known, f"{' '.join(path)} has no option {word}"


def test_compose_file_parses_with_the_hub_and_mosquitto():
    services = load_compose()["services"]
    assert {"hub", "mosquitto", "init"} <= set(services)
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert "8883:8883" in services["mosquitto"]["ports"]  # devices only over TLS


def test_every_path_the_compose_file_names_exists():
    doc = load_compose()
    for name, service in doc["services"].items():
        build = service.get("build")
        if build:
            context = (CONTAINER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (CONTAINER / source).exists(), f"{name}: mounts missing {source}"
            else:
                assert source in doc["volumes"], f"{name}: undeclared volume {source}"


def test_every_edgefleet_command_the_compose_file_runs_exists():
    commands = [s["command"] for s in load_compose()["services"].values() if "command" in s]
    assert len(commands) >= 3
    for command in commands:
        check_command(command)
    header = COMPOSE.read_text().split("\nname:")[0]  # the usage comments
    examples = re.findall(r"exec hub (edgefleet .*?)(?=\n#   docker|\n#\n)", header, re.S)
    assert examples, "the compose file's enrol example"
    for example in examples:
        check_command(shlex.split(example.replace("\\\n#", " "))[1:])


def test_every_file_the_dockerfile_copies_exists_and_it_runs_edgefleet():
    text = DOCKERFILE.read_text()
    copied = [w for line in re.findall(r"^COPY (.+)$", text, re.M) for w in line.split()[:-1]]
    assert copied
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: missing"
    assert 'ENTRYPOINT ["edgefleet"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    check_command(json.loads(cmd.group(1)))


def test_mosquitto_config_keeps_the_deploy_layout():
    conf = (CONTAINER / "mosquitto.conf").read_text()
    assert "per_listener_settings true" in conf
    assert conf.count("allow_anonymous false") == 2
    assert conf.count("acl_file /etc/mosquitto/edgefleet/acl") == 2
    assert "use_username_as_clientid true" in conf


def test_a_wrong_option_would_be_caught():
    with pytest.raises(AssertionError, match="has no option --brokr-url"):
        check_command(["hub", "serve", "--brokr-url", "x"])
    with pytest.raises(AssertionError, match="has no command 'serv'"):
        check_command(["hub", "serv"])
