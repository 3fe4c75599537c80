"""A device clock that ran more than a day ahead must not wedge its outbox (issue 16).

Windows closed while an agent's wall clock was over a day ahead end more than
``Limits.max_clock_skew_s`` after the hub's clock. The hub used to refuse them as
implausible without an ack, so the agent resent them until the hub's clock caught up
(the soak's ``--clock-jump 72``). The hub's clock is the reference: such a window, if
its counts are plausible, is stored at the hub's arrival time (its own span before),
acknowledged, logged, counted per device and audited; a resend of the same range is a
duplicate, not an identity conflict.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from benchmarks.soak.ledger import OffsetClock, set_clock_offset
from edge_agent.contract.messages import EventKind, MetricsMessage
from edge_agent.contract.topics import Channel
from edge_agent.contract.window import MetricsWindow, merge_windows
from edge_agent.daemon.agent import Agent
from edge_agent.daemon.config import BrokerConfig
from edge_agent.errors import ValidationError
from hub.broker import EmbeddedBroker, free_port
from hub.ingest import RESTAMPED_ACTION, Ingest
from hub.plausibility import Limits, Verdict, judge_message, judge_window, restamp
from hub.service import HubService, HubSettings
from hub.store import Restamped, Store, StoreOutcome
from tests.hub.test_hostile_device import scaled
from tests.hub.test_ingest import Publisher
from tests.hub.test_store import window
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

pytestmark = pytest.mark.timeout(180)

DAY = 86400.0
NOW = 1.7e9  # the hub's clock in the unit tests
WAIT = 60.0


def ahead(seq: int, by: float = 3 * DAY, at: float = NOW) -> MetricsWindow:
    """Window ``seq`` (one minute) of a device whose clock is ``by`` seconds ahead of
    ``at``."""
    return window(seq, at=at + by)


# --- the decision (hub.plausibility) -----------------------------------------------------


def test_a_window_within_the_bound_is_accepted_as_stamped():
    w = ahead(1, by=DAY - 200)
    assert judge_window(w, Limits(), NOW).verdict is Verdict.ACCEPT


def test_a_window_ending_exactly_at_the_bound_is_accepted_as_stamped():
    w = replace(window(1), start=NOW + DAY - 60, end=NOW + DAY)
    judgement = judge_window(w, Limits(), NOW)
    assert judgement.verdict is Verdict.ACCEPT and judgement.restamped is None


def test_a_window_ending_past_the_bound_is_restamped_to_the_hubs_clock_keeping_its_span():
    w = replace(window(1), start=NOW + DAY - 59.5, end=NOW + DAY + 0.5)
    judgement = judge_window(w, Limits(), NOW)
    assert judgement.verdict is Verdict.RESTAMP and judgement.problem is None
    moved = judgement.restamped
    assert moved is not None
    assert (moved.start, moved.end) == (NOW - 60.0, NOW)
    # only the times move: every count is the device's
    assert replace(moved, start=w.start, end=w.end).to_json() == w.to_json()
    MetricsWindow.from_json(moved.to_json())  # still a valid window


def test_a_restamped_window_with_a_negative_span_gets_an_empty_interval_at_the_hubs_clock():
    # impossible once validated (start > end is refused), but restamp must not make one
    w = replace(window(1), start=NOW + 5 * DAY, end=NOW + 3 * DAY)
    moved = restamp(w, NOW)
    assert moved.start == moved.end == NOW


def test_a_window_over_the_rate_and_in_the_future_is_refused_not_restamped():
    w = ahead(1)
    flood = scaled(w, 10**12 // w.n)
    judgement = judge_window(flood, Limits(), NOW)
    assert judgement.verdict is Verdict.REFUSE and judgement.restamped is None
    assert judgement.problem is not None and "is over 50000/s" in judgement.problem
    errors = replace(w, errors={"invoke_error": 10**10})
    assert judge_window(errors, Limits(), NOW).verdict is Verdict.REFUSE


def test_a_nan_time_never_reaches_the_decision_and_is_refused_if_it_did():
    doc = window(1).to_json()
    doc["end"] = math.nan
    with pytest.raises(ValidationError):
        MetricsWindow.from_json(doc)
    for bad in (math.nan, math.inf):
        w = replace(window(1), end=bad)
        judgement = judge_window(w, Limits(), NOW)
        assert judgement.verdict is Verdict.REFUSE
        assert judgement.problem is not None and "not a finite time" in judgement.problem


def test_a_message_restamps_only_its_future_windows_and_names_the_original_end():
    now_ok = window(1, at=NOW - 600)
    future = replace(window(1, role="shadow"), start=NOW + 3 * DAY, end=NOW + 3 * DAY + 60)
    m = MetricsMessage("dev-a", 4, 4, (now_ok, future))
    judgement = judge_message(m, Limits(), NOW)
    assert judgement.problem is None and judgement.restamped
    assert judgement.windows is not None
    assert judgement.windows[0] is now_ok
    assert (judgement.windows[1].start, judgement.windows[1].end) == (NOW - 60, NOW)
    assert judgement.original_end == NOW + 3 * DAY + 60
    assert judgement.shift_s == -(3 * DAY + 60)
    assert not judge_message(MetricsMessage("dev-a", 5, 5, (now_ok,)), Limits(), NOW).restamped
    refused = judge_message(
        MetricsMessage("dev-a", 6, 6, (scaled(future, 10**12 // future.n),)), Limits(), NOW
    )
    assert refused.problem is not None and refused.problem.startswith("dev-a [6, 6]: ")


# --- the store: restamped rows, resends, compaction ---------------------------------------


def restamped(m: MetricsMessage, now: float) -> Restamped:
    judgement = judge_message(m, Limits(), now)
    assert judgement.windows is not None, "the message was expected in the future"
    return Restamped(m, judgement.windows)


def test_a_restamped_window_is_stored_once_at_the_hubs_time_and_its_resend_is_a_duplicate(
    tmp_path,
):
    m = MetricsMessage("dev-a", 1, 1, (ahead(1),))
    with Store(tmp_path / "hub.db") as store:
        first = store.store_metrics_batch([restamped(m, NOW)])
        assert first.outcomes == (StoreOutcome.STORED,) and first.contiguous == {"dev-a": 1}
        # the ack was lost: the same range again, restamped at a later arrival
        again = store.store_metrics_batch([restamped(m, NOW + 120)])
        assert again.outcomes == (StoreOutcome.DUPLICATE,)
        assert again.conflicts == ()
        # and once more after the hub's clock caught up: stored as sent, still the same
        late = store.store_metrics_batch([m])
        assert late.outcomes == (StoreOutcome.DUPLICATE,) and late.conflicts == ()
        # a clone's other windows under that range are still a conflict
        other = MetricsMessage("dev-a", 1, 1, (ahead(2),))
        assert store.store_metrics_batch([restamped(other, NOW)]).conflicts
        [stored] = store.windows_for(device="dev-a")
        assert (stored.start, stored.end) == (NOW - 60, NOW)
        assert stored.n == m.windows[0].n
        # queries see the hub's time: the last hour holds it, the future does not
        [merged] = store.merged_windows("demo", 1, devices=["dev-a"], since=NOW - 3600)
        assert merged.n == m.windows[0].n and merged.end == NOW
        assert store.windows_for(device="dev-a", since=NOW + 3600) == []
    with sqlite3.connect(tmp_path / "hub.db") as conn:
        [(start, end, original)] = conn.execute(
            'SELECT start, "end", original FROM windows WHERE device_id = ?', ("dev-a",)
        ).fetchall()
    assert (start, end) == (NOW - 60, NOW)
    assert MetricsWindow.from_json(json.loads(original)) == m.windows[0]


def test_a_compacted_range_over_restamped_rows_replaces_them_without_double_counting(tmp_path):
    one, two, three = ahead(1), ahead(2), ahead(3)
    # the outbox merged rows 1-3 after 1 and 2 were sent (their acks lost)
    compacted = MetricsMessage("dev-a", 1, 3, (merge_windows(merge_windows(one, two), three),))
    with Store(tmp_path / "hub.db") as store:
        store.store_metrics_batch(
            [
                restamped(MetricsMessage("dev-a", 1, 1, (one,)), NOW),
                restamped(MetricsMessage("dev-a", 2, 2, (two,)), NOW + 60),
            ]
        )
        result = store.store_metrics_batch([restamped(compacted, NOW + 120)])
        assert result.outcomes == (StoreOutcome.STORED,) and result.conflicts == ()
        [stored] = store.windows_for(device="dev-a")
        assert stored.n == one.n + two.n + three.n and stored.end == NOW + 120
        assert store.stored_ranges("dev-a") == [(1, 3)] and store.contiguous("dev-a") == 3


def test_restamped_windows_of_other_keys_are_refused_by_the_store(tmp_path):
    m = MetricsMessage("dev-a", 1, 1, (ahead(1),))
    with Store(tmp_path / "hub.db") as store, pytest.raises(ValueError, match="do not match"):
        store.store_metrics_batch([Restamped(m, (window(1, role="shadow"),))])


# --- the ingest, on a real broker ---------------------------------------------------------


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def test_ingest_stores_acks_counts_and_audits_a_future_window_once_and_its_resend_is_a_duplicate(
    tmp_path, own_broker, caplog
):
    caplog.set_level(logging.WARNING)
    dev = f"skewed-{uuid.uuid4().hex[:8]}"
    hub_now = [NOW]
    audited: list[tuple[str, dict[str, object]]] = []
    m = MetricsMessage(dev, 1, 1, (ahead(1),))
    publisher = Publisher(own_broker.host, own_broker.port)
    with (
        Store(tmp_path / "hub.db") as store,
        Ingest(
            store,
            own_broker.host,
            own_broker.port,
            client_id=f"ingest-{uuid.uuid4().hex[:8]}",
            clock=lambda: hub_now[0],
            on_restamped=lambda device, details: audited.append((device, details)),
        ) as ingest,
    ):
        try:
            publisher.publish(dev, Channel.METRICS, m.to_bytes())
            assert ingest.wait_until(lambda c: c["stored"] == 1, WAIT), "the window stored"
            assert ingest.wait_until_acked(dev, 1, WAIT), "the window acknowledged"
            hub_now[0] = NOW + 300  # the ack was lost; the device sends it again
            publisher.publish(dev, Channel.METRICS, m.to_bytes())
            assert ingest.wait_until(lambda c: c["duplicates"] == 1, WAIT), "the resend seen"
        finally:
            publisher.close()
        counters = ingest.counters()
        assert counters["implausible"] == 0 and counters["identity_conflicts"] == 0
        assert counters["clock_skewed"] == 1
        assert ingest.clock_skewed() == {dev: 1} and ingest.implausible() == {}
        [stored] = store.windows_for(device=dev)
        assert (stored.start, stored.end) == (NOW - 60, NOW)
        assert store.contiguous(dev) == 1
        assert not [
            r for r in store.events(device=dev) if r.event.kind is EventKind.IDENTITY_CONFLICT
        ]
    assert audited == [
        (
            dev,
            {
                "epoch": "",
                "seq_lo": 1,
                "seq_hi": 1,
                "original_end": m.windows[0].end,
                "shift_s": NOW - m.windows[0].end,
            },
        )
    ]
    lines = [r.getMessage() for r in caplog.records if "hub's arrival time" in r.getMessage()]
    assert len(lines) == 1 and f"{dev} [1, 1]" in lines[0] and "\n" not in lines[0]


# --- end to end: a real agent whose clock is days ahead, the assembled hub ----------------


@pytest.fixture
def hub_service(tmp_path) -> Iterator[HubService]:
    settings = HubSettings(data_dir=tmp_path / "hub", api_port=0, embedded_broker_port=free_port())
    with HubService(settings) as service:
        yield service


def test_an_agent_whose_clock_runs_three_days_ahead_drains_its_outbox(
    hub_service, agent_config, server, bundles, reference_x, signing_keys
):
    broker = hub_service.broker
    assert broker is not None and hub_service.store is not None
    assert hub_service.audit is not None
    token, _ = hub_service.tokens.create("ops", ["admin"])
    headers = {"Authorization": f"Bearer {token}"}
    config = replace(
        agent_config,
        broker=BrokerConfig(host=broker.host, port=broker.port),
        resend_after_s=1.0,
    )
    dev = config.device_id
    clock = OffsetClock(config.data_dir)  # the soak's clock_jump_agent switch
    publisher = HubDouble(broker.host, broker.port, signing_keys[:2], ack=False)
    try:
        with Agent(config, clock=clock) as agent:
            url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
            publisher.publish_directive(publisher.directive(dev, model_ref(bundles["v1"], url)))
            publisher.wait_for(publisher.event(dev, "activated"))
            set_clock_offset(config.data_dir, 3 * DAY)
            clock._looked = -1.0  # look at the offset now, not in half a second
            assert clock() - time.time() > 2.9 * DAY
            for n in (7, 5):
                for row in reference_x[:n]:
                    agent.predict(row)
                assert agent.close_window(WAIT)
            assert agent.wait_for_drain(WAIT), "the outbox drained: the hub acked the windows"
            hub_time = time.time()
            metrics = httpx.get(f"{hub_service.api.url}/metrics", headers=headers).text
    finally:
        publisher.close()
    windows = hub_service.store.windows_for(device=dev)
    assert sorted(w.n for w in windows) == [5, 7]
    assert all(w.end <= hub_time + 60 for w in windows), "stored at the hub's time"
    counted = f'edgefleet_ingest_clock_skewed_by_device_total{{device="{dev}"}} 2'
    assert counted in metrics
    assert "edgefleet_ingest_implausible_total 0" in metrics
    # audited once for the device (rate-limited: the second message counts into its
    # next entry), while /metrics above counts both
    entries = [e for e in hub_service.audit.entries() if e.action == RESTAMPED_ACTION]
    assert [e.target for e in entries] == [dev]
    assert float(str(entries[0].details["shift_s"])) < -2.9 * DAY
    assert entries[0].details["messages"] == 1
