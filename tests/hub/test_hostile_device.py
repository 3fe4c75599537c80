"""One device cannot hurt the fleet: windows it cannot have counted are refused at ingest.

A consistent but absurd window (10^12 predictions in a minute, or every count 2^53)
used to be stored and then dominated fleet drift, or broke every merge. Now the ingest
refuses it in one line, counts the refusal for that device, and keeps serving.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace

import pytest

from edge_agent.contract.messages import MetricsMessage, State
from edge_agent.contract.topics import Channel
from edge_agent.contract.window import FeatureWindow, MetricsWindow
from hub.broker import free_port
from hub.bundler import ReferenceData
from hub.ingest import Ingest
from hub.plausibility import Limits, message_problem, window_problem
from hub.store import Store
from tests.hub.test_ingest import Publisher
from tests.hub.test_store import row, window

pytestmark = pytest.mark.timeout(60)


def scaled(w: MetricsWindow, k: int) -> MetricsWindow:
    """``w`` with every count multiplied by ``k``: still internally consistent."""

    def feature(f: FeatureWindow) -> FeatureWindow:
        return f._replace(
            counts=tuple(c * k for c in f.counts),
            count=f.count * k,
            m2=f.m2 * k,
            out_of_range=f.out_of_range * k,
        )

    return replace(
        w,
        n=w.n * k,
        features=tuple(feature(f) for f in w.features),
        class_counts=tuple(c * k for c in w.class_counts),
        confidence=tuple(c * k for c in w.confidence),
        latency=tuple(c * k for c in w.latency),
        errors={e: c * k for e, c in w.errors.items()},
        compared=w.compared * k,
        agreed=w.agreed * k,
    )


def test_honest_windows_are_plausible():
    for seq in range(1, 50):
        assert window_problem(window(seq), Limits(), now=1e9) is None
    assert message_problem(row("dev-a", 1, 20), Limits(), now=1e9) is None  # compacted


def test_a_trillion_predictions_in_a_minute_is_refused():
    w = scaled(window(1), 10**12 // window(1).n)
    problem = window_problem(w, Limits(max_rate_per_s=50_000), now=1e9)
    assert problem is not None and "predictions in 60 s is over 50000/s" in problem
    assert "\n" not in problem


def test_counts_of_two_to_the_53_are_refused():
    w = window(1)
    big = scaled(w, 2**53 // w.n)
    assert window_problem(big, Limits(), now=1e9) is not None


def test_error_flood_is_refused_and_a_future_window_is_not_a_counting_problem():
    w = window(1)
    flood = replace(w, errors={"invoke_error": 10**10})
    assert "errors" in (window_problem(flood, Limits(), now=1e9) or "")
    # a clock that ran ahead is restamped to the hub's time, not refused
    # (tests/hub/test_clock_skew.py)
    future = replace(w, start=1e9 + 5 * 86400, end=1e9 + 5 * 86400 + 60)
    assert window_problem(future, Limits(), now=1e9) is None


def test_implausible_metrics_refused_at_ingest_counted_per_device(tmp_path, broker, caplog):
    caplog.set_level(logging.WARNING)
    dev = f"hostile-{uuid.uuid4().hex[:8]}"
    honest = f"honest-{uuid.uuid4().hex[:8]}"
    huge = MetricsMessage(dev, 2, 2, (scaled(window(2), 10**12 // window(2).n),))
    publisher = Publisher(broker.host, broker.port)
    with (
        Store(tmp_path / "hub.db") as store,
        Ingest(
            store, broker.host, broker.port, client_id=f"ingest-{uuid.uuid4().hex[:8]}"
        ) as ingest,
    ):
        try:
            publisher.publish(dev, Channel.METRICS, row(dev, 1).to_bytes())
            publisher.publish(dev, Channel.METRICS, huge.to_bytes())
            publisher.publish(honest, Channel.METRICS, row(honest, 1).to_bytes())
            assert ingest.wait_until(lambda c: c["implausible"] == 1 and c["stored"] == 2, 30)
            assert ingest.wait_until_acked(honest, 1, 30)
        finally:
            publisher.close()
        assert ingest.implausible() == {dev: 1}
        stored = store.windows_for(device=dev)
        assert [w.n for w in stored] == [window(1).n]  # the absurd window never got in
        assert store.contiguous(dev) == 1  # not acknowledged past the refused window
    lines = [r.getMessage() for r in caplog.records if "implausible" in r.getMessage()]
    assert len(lines) == 1 and dev in lines[0] and "[2, 2]" in lines[0]


def test_stored_absurd_rows_never_break_a_query(tmp_path, caplog):
    """Rows stored before the plausibility check (or by an older release) whose counts
    cannot be merged are skipped and reported; the query answers with the rest."""
    w1, w2, w3 = window(1), window(2), window(3)
    with Store(tmp_path / "hub.db") as store:
        store.store_metrics_batch(
            [
                MetricsMessage("dev-x", 1, 1, (scaled(w1, 2**53 // w1.n),)),
                MetricsMessage("dev-x", 2, 2, (scaled(w2, 2**53 // w2.n),)),
                MetricsMessage("dev-x", 3, 3, (w3,)),
            ]
        )
        (merged,) = store.merged_windows("demo", 1, "active", devices=["dev-x"])
        assert merged.n == w3.n  # the sound row; the two absurd ones cannot be added to it
    # left out of the roll-up, and said so
    assert "leaves out 2 window(s): they cannot be merged" in caplog.text


def test_a_rollout_whose_evaluation_fails_says_so_and_the_others_go_on(
    tmp_path, demo_dir, reference_x, monkeypatch
):
    from hub.rollouts import Gates, RolloutSpec, Stage
    from hub.service import HubService, HubSettings

    settings = HubSettings(
        data_dir=tmp_path / "hub",
        api_port=0,
        embedded_broker_port=free_port(),
        rollout_interval_s=3600,  # only this test's ticks
    )
    with HubService(settings) as service:
        ref = ReferenceData(reference_x, tuple(f"f{i}" for i in range(10)))
        for name in ("pump", "fan"):
            service.registry.push_model(
                (demo_dir / "model-int8.tflite").read_bytes(), name=name, reference=ref
            )
        service.store.record_state(State("dev-1", True, 1.0))
        gates = Gates(max_psi=None, max_latency_ratio=None)
        for rid, model in (("broken", "pump"), ("fine", "fan")):
            service.runner.create(
                RolloutSpec(id=rid, model=model, target_version=1, previous_version=None,
                            stages=(Stage(share=1.0, bake_s=3600, gates=gates),))
            )  # fmt: skip
        real = service.runner._metrics

        def metrics(r, members, progress_map):
            if r.spec.id == "broken":
                raise OverflowError("Python int too large to convert to C long")
            return real(r, members, progress_map)

        monkeypatch.setattr(service.runner, "_metrics", metrics)
        service.runner.tick()
        broken = service.runner.rollouts.get("broken").rollout
        fine = service.runner.rollouts.get("fine").rollout
        (status,) = broken.gates
        assert status.verdict == "waiting" and status.detail.startswith("cannot evaluate:")
        assert "too large" in status.detail
        assert fine.gates and all(g.name != "evaluation" for g in fine.gates)
