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


def device(
    id_: str, tags=(), online=True, seen=1.0, active=None, shadow=None, drift=None
) -> Device:
    return Device(
        id_, tuple(tags), 0.0, seen, online, None,
        ModelRef("pump", active) if active else None, None,
        ModelRef("pump", shadow) if shadow else None, Health(), 0, None, drift,
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


def test_drift_terms_match_the_hubs_verdict_and_go_to_the_hub():
    fleet = [
        device("a", active=1, drift="major"),
        device("b", active=1, drift="none"),
        device("c", active=1, drift="insufficient"),
        device("d"),  # no model: no verdict
    ]

    def ids(text: str) -> list[str]:
        terms = parse(text, FLEET_KEYS)
        return [d.id for d in fleet if match_device(d, terms)]

    assert ids("drift:major") == ["a"]
    assert ids("drift:None") == ["b"]
    assert ids("!drift:none") == ["a", "c"]  # without a verdict: no drift term matches
    assert ids("!drift:none !drift:insufficient") == ["a"]
    assert ids("!tag:x") == ["a", "b", "c", "d"]
    assert server_params(parse("drift:major", FLEET_KEYS)) == {"drift": ["major"]}
    assert server_params(parse("!drift:none tag:s", FLEET_KEYS)) == {
        "drift": ["insufficient", "minor", "drift", "major"],
        "tag": "s",
    }
    assert server_params(parse("drift:none drift:major", FLEET_KEYS)) == {"drift": []}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("drift:bad", "drift:bad: use one of insufficient, none, minor, drift, major"),
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


def test_plot_series_from_the_hubs_answers():
    from edgefleet_client import (
        DeviceHistory,
        DriftBins,
        DriftHistory,
        DriftHour,
        FeaturePsi,
        HistoryPoint,
    )
    from tui.plots import METRICS, BinAxis, bin_series, history_series, psi_series

    until = 10_000.0
    h = DeviceHistory("d", "active", until - 3 * 3600, until, 600.0, (
        HistoryPoint(until - 7200, until - 6600, 1, 40, 0, 1.2, 0.0),
        HistoryPoint(until - 3600, until - 3000, 1, 30, 10, None, None),  # nothing timed
    ))  # fmt: skip
    n, p95, errors = METRICS
    assert history_series(h, n) == ([-2.0, -1.0], [40.0, 30.0])
    assert history_series(h, p95) == ([-2.0], [1.2])  # the untimed point has no p95
    assert history_series(h, errors) == ([-2.0], [0.0])

    b = DriftBins("pump", 1, "f0", ("f0",), (0.0, 1.0), (0.25, 0.5, 0.25), (1, 2, 1),
                  (0, 3, 1), 2, 6, None)  # fmt: skip
    xs, live, step_x, step_y = bin_series(b)
    assert xs == [0.0, 1.0, 2.0] and live == [0.0, 0.75, 0.25]
    assert step_x == [-0.5, 0.5, 0.5, 1.5, 1.5, 2.5] and step_y == [
        0.25,
        0.25,
        0.5,
        0.5,
        0.25,
        0.25,
    ]
    axis = BinAxis(b.edges)
    assert axis.get_labels_for_ticks([0.0, 1.0, 2.0]) == ["<0", "0", ">1"]

    d = DriftHistory("pump", 1, "active", until - 24 * 3600, until, 0.1, 0.25, (
        DriftHour(until - 7200, 100, (FeaturePsi("f0", 0.05, "none"),), "none"),
        DriftHour(until - 3600, 100, (FeaturePsi("f0", None, "insufficient"),), "insufficient"),
        DriftHour(until - 1800, 100, (FeaturePsi("f0", 0.4, "major"),), "major"),
    ))  # fmt: skip
    assert psi_series(d, "f0") == ([-2.0, -0.5], [0.05, 0.4])
    assert psi_series(d, "f9") == ([], [])


def test_redaction_masks_digests_times_and_paths():
    from tui.format import mask_ids, masked

    assert masked("2026-12-01 13:05") == "····-··-·· ··:··"
    assert masked("0a1b2c3d4e5f") == "············"
    assert mask_ids("token:0a1b2c3d4e5f:ops") == "token:············:ops"
    assert mask_ids("/tmp/pytest-of-root/pytest-531/hub0") == "…/hub0"
    assert mask_ids("canary-2") == "canary-2"
