"""Alert rules: the pure state machine on a fake clock, then the alerter against a real
SQLite store and a real loopback webhook."""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.contract.messages import MetricsMessage, ModelVersion, State
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import MetricsWindow
from edge_agent.errors import ValidationError
from edge_agent.inference.accumulator import WindowAccumulator
from hub.alerts import (
    Alerter,
    AlertRule,
    RuleState,
    Scope,
    evaluate_rule,
    load_rules,
    metric_value,
)
from hub.drift import drift_report
from hub.store import Store

F, C = 3, 3
CONF_EDGES = np.linspace(0.0, 1.0, 11)


def probs_for(x: np.ndarray) -> np.ndarray:
    z = np.nan_to_num(x[:, :C], nan=0.0)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def make_reference(n: int = 5000) -> ReferenceStats:
    data = np.random.default_rng(0).normal(size=(n, F))
    return ReferenceStats.from_data(
        data,
        probs_for(data),
        [f"f{j}" for j in range(F)],
        [f"c{k}" for k in range(C)],
        10,
        tuple(CONF_EDGES),
    )


REF = make_reference()


def window(start: float, end: float, *, shift: float = 0.0, seed: int = 1) -> MetricsWindow:
    x = np.random.default_rng(seed).normal(size=(500, F)) + shift
    acc = WindowAccumulator(REF, "m", 1, "active", clock=lambda: start)
    acc.record(x, probs_for(x), 0.002)
    w = acc.close(end)
    assert w is not None
    return w


def store_window(store: Store, device: str, seq: int, w: MetricsWindow) -> None:
    store.store_metrics([MetricsMessage(device, seq, seq, (w,))])


def rule(**kw: Any) -> AlertRule:
    base: dict[str, Any] = {
        "name": "psi-high",
        "metric": "psi_max",
        "comparison": ">",
        "threshold": 0.25,
        "sustained_s": 120,
        "scope": {"model": "m", "version": 1},
    }
    base.update(kw)
    return AlertRule.from_json(base)


# --- pure evaluation -------------------------------------------------------------


def run(r: AlertRule, series: list[tuple[float, float | None]]) -> list[tuple[float, str]]:
    state = RuleState()
    out: list[tuple[float, str]] = []
    for t, v in series:
        state, tr = evaluate_rule(r, v, t, state)
        if tr is not None:
            out.append((t, tr))
    return out


def test_fires_only_after_sustained_duration() -> None:
    r = rule()
    assert run(r, [(0, 1.0), (60, 1.0), (119, 1.0)]) == []
    assert run(r, [(0, 1.0), (60, 1.0), (120, 1.0), (180, 1.0)]) == [(120, "firing")]


def test_flapping_does_not_fire() -> None:
    series: list[tuple[float, float | None]] = [
        (t, 1.0 if t % 100 else 0.0) for t in range(0, 1000, 50)
    ]
    assert run(rule(), series) == []


def test_none_never_fires_and_restarts_the_count() -> None:
    r = rule(sustained_s=0)
    assert run(r, [(0, None), (10, None), (20, float("nan"))]) == []
    assert run(rule(), [(0, 1.0), (60, None), (130, 1.0), (200, 1.0)]) == []


def test_resolves_after_clearing_and_none_does_not_resolve() -> None:
    r = rule(sustained_s=0)
    assert run(r, [(0, 1.0), (10, None), (20, 1.0), (30, 0.1), (40, 0.1)]) == [
        (0, "firing"),
        (30, "resolved"),
    ]


def test_cooldown_suppresses_refiring() -> None:
    r = rule(sustained_s=0, cooldown_s=300)
    series: list[tuple[float, float | None]] = [
        (0, 1.0), (10, 0.0), (20, 1.0), (200, 1.0), (300, 1.0), (310, 1.0)
    ]  # fmt: skip
    assert run(r, series) == [(0, "firing"), (10, "resolved"), (300, "firing")]


def test_less_than_comparison() -> None:
    r = rule(metric="drifted_share", comparison="<", threshold=0.5, sustained_s=0)
    assert run(r, [(0, 0.6), (1, 0.5), (2, 0.4)]) == [(2, "firing")]


# --- rules JSON ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"metric": "accuracy"}, "rule.metric: unknown metric 'accuracy'"),
        ({"comparison": ">="}, "rule.comparison"),
        ({"threshold": "high"}, "rule.threshold: expected float"),
        ({"sustained_s": -1}, "rule.sustained_s"),
        ({"extra": 1}, "unexpected field(s) extra"),
        ({"scope": {"model": "m"}}, "needs a model and a version"),
        ({"scope": {"version": 1}}, "a version needs a model"),
        ({"scope": {"model": "m", "version": 1, "device": "d", "tag": "t"}}, "not both"),
        ({"name": "../x"}, "rule.name"),
    ],
)
def test_malformed_rule_refused_in_one_line(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        rule(**change)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_load_rules_round_trip_and_duplicates() -> None:
    r1 = rule()
    r2 = rule(name="offline", metric="offline_devices_share", scope={"tag": "north"})
    data = json.dumps({"rules": [r1.to_json(), r2.to_json()]}).encode()
    assert load_rules(data) == (r1, r2)
    with pytest.raises(ValidationError, match="used twice"):
        load_rules(json.dumps([r1.to_json(), r1.to_json()]).encode())
    with pytest.raises(ValidationError, match="rules"):
        load_rules(b"{not json")


# --- metric extraction -------------------------------------------------------------


def test_metric_value_from_report() -> None:
    report = drift_report(REF, [window(0, 60, shift=2.0)])
    psi_max = metric_value(rule(), report)
    assert psi_max is not None
    assert psi_max == max(f.psi for f in report.features if f.psi is not None)
    assert psi_max > 0.25
    assert metric_value(rule(metric="drifted_share"), report) == 1.0
    assert metric_value(rule(metric="error_rate"), report) == 0.0
    assert metric_value(rule(metric="nan_rate_max"), report) == 0.0
    assert metric_value(rule(metric="latency_p95_ms"), report) is not None
    assert metric_value(rule(), None) is None
    assert metric_value(rule(metric="drift"), report) == 1.0
    assert metric_value(rule(metric="drifted_features"), report) == len(report.decision.drifted)
    small = drift_report(REF, [window(0, 60)], min_count=10_000)
    for metric in ("psi_max", "js_max", "drift", "drifted_features", "drifted_share"):
        # below the evidence needed: no value, so nothing fires (or resolves) on a guess
        assert metric_value(rule(metric=metric), small) is None, metric


def test_drift_metric_is_zero_on_stable_data_with_enough_evidence() -> None:
    windows = [window(60.0 * i, 60.0 * i + 60, seed=i) for i in range(8)]  # 4,000 stable
    report = drift_report(REF, windows)
    assert report.decision.verdict in ("none", "minor"), report.decision.describe()
    assert metric_value(rule(metric="drift"), report) == 0.0
    assert metric_value(rule(metric="drifted_features"), report) == 0.0


# --- the alerter, against a real store and a real webhook ------------------------------


class Hook:
    """A loopback webhook: answers with the scripted statuses, then 200."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.delivered = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.requests.append((self.path, dict(self.headers)))
                if status == 200:
                    hook.bodies.append(json.loads(body))
                    hook.delivered.set()
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hub.db") as s:
        yield s


def make_alerter(store: Store, url: str | None, *rules: AlertRule, **kw: Any) -> Alerter:
    return Alerter(
        store, lambda _m, _v: REF, rules or (rule(),), url, window_s=600, backoff_s=0.0, **kw
    )


def test_sustained_drift_fires_one_webhook_then_resolves(store: Store, hook: Hook) -> None:
    alerter = make_alerter(store, hook.url)
    store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
    assert alerter.tick(1060) == []
    assert alerter.tick(1120) == []  # held for 60 s of the 120 s
    [fired] = alerter.tick(1200)
    assert hook.delivered.wait(30), "no webhook POST in 30 s"
    assert fired.state == "firing"
    assert fired.delivery == "delivered"
    assert alerter.tick(1260) == []  # still firing: no second webhook
    assert len(hook.bodies) == 1
    body = hook.bodies[0]
    assert body["rule"] == "psi-high"
    assert body["state"] == "firing"
    assert body["metric"] == "psi_max"
    assert body["threshold"] == 0.25
    assert body["value"] > 0.25
    assert body["scope"]["model"] == "m"
    assert body["scope"]["version"] == 1
    assert body["drift"]["verdict"] in ("drift", "major")  # the evidence behind the value
    assert "chi2" in body["drift"]["detail"]

    # The drifted window falls out of the last 600 s; an undrifted one remains, too
    # small to say "no drift" (500 of 532 predictions): the alert neither resolves nor
    # fires on a guess. A second one gives the evidence.
    hook.delivered.clear()
    store_window(store, "d1", 2, window(1800, 1860))
    assert alerter.tick(1900) == [] and alerter.state("psi-high").firing
    store_window(store, "d2", 1, window(1840, 1900, seed=2))
    [resolved] = alerter.tick(1960)
    assert hook.delivered.wait(30), "no webhook POST in 30 s"
    assert resolved.state == "resolved"
    assert [b["state"] for b in hook.bodies] == ["firing", "resolved"]
    assert hook.bodies[1]["value"] < 0.25
    assert hook.bodies[1]["drift"]["verdict"] in ("none", "minor")

    rows = (
        sqlite3.connect(store.path)
        .execute("SELECT id, rule, state, value, ts, delivery FROM alerts ORDER BY id")
        .fetchall()
    )
    assert [(r[1], r[2], r[4], r[5]) for r in rows] == [
        ("psi-high", "firing", 1200.0, "delivered"),
        ("psi-high", "resolved", 1960.0, "delivered"),
    ]
    assert [a.state for a in alerter.alerts()] == ["resolved", "firing"]
    alerter.close()


def test_webhook_retried_after_two_500s(store: Store) -> None:
    hook = Hook([500, 500])
    try:
        alerter = make_alerter(store, hook.url, rule(sustained_s=0))
        store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
        [fired] = alerter.tick(1060)
        assert hook.delivered.wait(30), "no webhook POST in 30 s"
        assert len(hook.requests) == 3
        assert len(hook.bodies) == 1
        assert fired.delivery == "delivered"
        alerter.close()
    finally:
        hook.close()


def test_webhook_down_never_breaks_tick(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:s3cret@127.0.0.1:{port}/hook?token=t0ps3cret"
    alerter = make_alerter(store, url, rule(sustained_s=0), retries=2)
    store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
    with caplog.at_level(logging.DEBUG):
        [fired] = alerter.tick(1060)
    assert fired.state == "firing"
    assert fired.delivery.startswith("failed after 3 tries: ConnectError")
    assert alerter.alerts()[0].delivery == fired.delivery  # recorded
    failures = [r for r in caplog.records if "webhook" in r.getMessage()]
    assert len(failures) == 1
    assert "\n" not in failures[0].getMessage()
    assert "s3cret" not in caplog.text
    assert "t0ps3cret" not in caplog.text
    assert f"http://127.0.0.1:{port}/hook" in caplog.text
    alerter.close()


def test_webhook_credentials_sent_as_basic_auth(store: Store, hook: Hook) -> None:
    url = hook.url.replace("http://", "http://user:pw@") + "?token=abc"
    alerter = make_alerter(store, url, rule(sustained_s=0))
    store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
    alerter.tick(1060)
    assert hook.delivered.wait(30), "no webhook POST in 30 s"
    path, headers = hook.requests[0]
    assert path == "/hook?token=abc"
    assert headers["authorization"] == "Basic dXNlcjpwdw=="  # user:pw
    alerter.close()


def test_no_windows_no_alert(store: Store) -> None:
    alerter = make_alerter(store, None, rule(sustained_s=0))
    assert alerter.tick(1000) == []
    assert alerter.alerts() == []
    alerter.close()


def test_offline_devices_share_with_tag_scope(store: Store) -> None:
    r = rule(
        name="offline",
        metric="offline_devices_share",
        threshold=0.4,
        sustained_s=0,
        scope={"tag": "north"},
    )
    active = ModelVersion("m", 1)
    for d in ("a", "b", "c"):
        store.record_state(State(device_id=d, online=True, active=active), now=1.0)
    store.set_tags("a", ["north"])
    store.set_tags("b", ["north"])
    store.record_state(State(device_id="a", online=False), now=2.0)
    store.record_state(State(device_id="c", online=False), now=2.0)  # not in scope
    alerter = make_alerter(store, None, r)
    [fired] = alerter.tick(10)
    assert (fired.state, fired.value, fired.delivery) == ("firing", 0.5, "no webhook")
    alerter.close()


def test_firing_state_survives_a_restart(store: Store) -> None:
    store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
    first = make_alerter(store, None, rule(sustained_s=0))
    assert [a.state for a in first.tick(1060)] == ["firing"]
    first.close()
    second = make_alerter(store, None, rule(sustained_s=0))
    assert second.state("psi-high").firing
    assert second.tick(1070) == []  # no duplicate firing
    second.close()


def test_background_thread_ticks_and_stops_promptly(store: Store, hook: Hook) -> None:
    store_window(store, "d1", 1, window(1000, 1060, shift=2.0))
    alerter = make_alerter(store, hook.url, rule(sustained_s=0), clock=lambda: 1060.0)
    alerter.start(interval_s=0.01)
    assert hook.delivered.wait(30), "no webhook POST in 30 s"
    alerter.stop()
    assert alerter._thread is None
    assert len(hook.bodies) == 1
    alerter.close()


def test_scope_describe() -> None:
    assert Scope("m", 2, tag="north").describe() == "m v2 tag=north"
    assert Scope().describe() == "fleet"
