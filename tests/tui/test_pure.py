"""The console's pure parts: filters, commands, settings, formatting, the rollout form."""

from __future__ import annotations

import os

import pytest

from edgefleet_client import Device, Health, ModelRef
from tui.commands import Command, CommandError, parse_command
from tui.filters import FLEET_KEYS, FilterError, match_device, parse, server_params
from tui.format import ago, bar, size
from tui.forms import RolloutFields, check_rollout
from tui.settings import SettingsError, config_path, resolve


def device(id_: str, tags=(), online=True, seen=1.0, active=None, shadow=None) -> Device:
    return Device(
        id_, tuple(tags), 0.0, seen, online, None,
        ModelRef("pump", active) if active else None, None,
        ModelRef("pump", shadow) if shadow else None, Health(), 0, None,
    )  # fmt: skip


def test_fleet_filter_terms():
    fleet = [
        device("pump-01", ("site-a",), active=1),
        device("pump-02", ("site-a",), active=1, shadow=2),
        device("pump-03", ("site-b",), online=False, active=2),
        device("valve-01", ("site-b",), online=False, seen=None),
    ]

    def ids(text: str) -> list[str]:
        terms = parse(text, FLEET_KEYS)
        return [d.id for d in fleet if match_device(d, terms)]

    assert ids("tag:site-a") == ["pump-01", "pump-02"]
    assert ids("version:2") == ["pump-02", "pump-03"]
    assert ids("version:pump:1 !tag:site-b") == ["pump-01", "pump-02"]
    assert ids("state:offline") == ["pump-03"]
    assert ids("state:never") == ["valve-01"]
    assert ids("valve") == ["valve-01"]
    assert ids("PUMP-0 !state:offline") == ["pump-01", "pump-02"]
    assert server_params(parse("tag:site-a state:offline !tag:x", FLEET_KEYS)) == {
        "tag": "site-a",
        "online": False,
    }
    assert server_params(parse("state:never", FLEET_KEYS)) == {"online": False}
    assert server_params(parse("!state:never", FLEET_KEYS)) == {}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour:red", "unknown filter 'colour'"),
        ("tag:", "give a value"),
        ("state:up", "use one of"),
    ],
)
def test_bad_filters_are_one_line_errors(text, message):
    with pytest.raises(FilterError, match=message):
        parse(text, FLEET_KEYS)


def test_commands_and_aliases():
    assert parse_command(":f") == Command("fleet")
    assert parse_command("devices") == Command("fleet")
    assert parse_command(":ro") == Command("rollouts")
    assert parse_command("device pump-01") == Command("device", "pump-01")
    assert parse_command("rollout r-1") == Command("rollout", "r-1")
    assert parse_command(":q") == Command("quit")
    with pytest.raises(CommandError, match="unknown command 'nope'"):
        parse_command(":nope")


def test_token_sources_in_order_and_never_over_shared(tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    with pytest.raises(SettingsError, match="no API token"):
        resolve(env)
    cfg = config_path(env)
    cfg.parent.mkdir(parents=True)
    cfg.write_text('token = "efb_from_config"\nhub = "https://hub.example:8700"\n')
    os.chmod(cfg, 0o644)
    with pytest.raises(SettingsError, match="readable by others: chmod 600"):
        resolve(env)
    os.chmod(cfg, 0o600)
    s = resolve(env)
    assert (s.token, s.hub_url) == ("efb_from_config", "https://hub.example:8700")
    s = resolve({**env, "EDGEFLEET_TOKEN": "efb_env"}, hub="http://other:1/")
    assert (s.token, s.hub_url, s.token_source) == ("efb_env", "http://other:1", "EDGEFLEET_TOKEN")
    tf = tmp_path / "token"
    tf.write_text("efb_file\n")
    tf.chmod(0o600)
    assert resolve({**env, "EDGEFLEET_TOKEN": "efb_env"}, token_file=tf).token == "efb_file"
    with pytest.raises(SettingsError, match="use http://host:port"):
        resolve({**env, "EDGEFLEET_HUB": "hub:8700"})


def test_formatting():
    assert ago(None, 100.0) == "-"
    assert [ago(100.0 - s, 100.0) for s in (5, 125, 7300, 200_000)] == ["5s", "2m", "2h", "2d"]
    assert size(None) == "-" and size(512) == "512B" and size(3 << 30) == "3.0G"
    assert bar(0.5, 4) == "██░░  50%" and bar(2.0, 2) == "██ 100%"


GOOD = RolloutFields(id="r-1", version=("pump", 2), previous="1", tags="site-a, line-1")


def test_rollout_form_fields_become_a_draft():
    draft, errors = check_rollout(GOOD)
    assert errors == {} and draft is not None
    assert (draft.model, draft.version, draft.previous) == ("pump", 2, 1)
    assert draft.tags == ("site-a", "line-1") and draft.stages == (0.1, 0.5, 1.0)
    assert (draft.bake_s, draft.min_success_share, draft.max_failure_share) == (300, 0.95, 0.05)
    assert draft.max_psi == 0.25 and not draft.manual and draft.on_failure == "pause"


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"id": ""}, "id", "give the rollout an id"),
        ({"id": "../x"}, "id", "letters, digits"),
        ({"version": None}, "version", "pick the model version"),
        ({"previous": "two"}, "previous", "a version number >= 1"),
        ({"previous": "2"}, "previous", "must differ from the target"),
        ({"stages": "10,x"}, "stages", "'x': each stage is a percentage"),
        ({"stages": "0,100"}, "stages", "above 0"),
        ({"stages": "120"}, "stages", "at most 100"),
        ({"stages": "50,10"}, "stages", "cumulative"),
        ({"stages": " , "}, "stages", "at least one stage"),
        ({"bake": "-1"}, "bake", "0 or more"),
        ({"bake": "nan"}, "bake", "0 or more"),
        ({"success": "101"}, "success", "from 0 to 100"),
        ({"failure": ""}, "failure", "from 0 to 100"),
        ({"max_psi": "0"}, "max_psi", "above 0"),
    ],
)
def test_a_bad_rollout_field_is_named_in_one_line(change, field, message):
    from dataclasses import replace

    draft, errors = check_rollout(replace(GOOD, **change))
    assert draft is None and list(errors) == [field]
    assert message in errors[field] and "\n" not in errors[field]
