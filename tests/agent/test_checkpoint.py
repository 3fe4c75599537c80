"""Counts that survive a hard kill: the agent checkpoints its open windows every few
seconds, every append deletes the checkpoint in the same transaction, and a restart
stores what the last checkpoint held. A kill -9 loses at most one checkpoint interval,
and nothing is ever counted twice.

Unit tests on a real SQLite outbox; then a real `edgefleet agent run` process killed
with SIGKILL, restarted, and counted at the hub double.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from edge_agent.daemon.outbox import Outbox
from edge_agent.inference.accumulator import WindowAccumulator
from hub.broker import EmbeddedBroker
from tests.agent.test_outbox import REF, C, F, make_window
from tests.support.agent_process import Daemon, poll, write_toml
from tests.support.bundles import model_ref
from tests.support.hub_double import HubDouble

pytestmark = pytest.mark.timeout(180)
WAIT = 60.0


def test_a_checkpoint_is_restored_as_rows_once(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    open_now = (make_window(1, n=30), make_window(2, n=5, role="shadow"))
    box.checkpoint([open_now])
    assert [tuple(w.n for w in g) for g in box.checkpointed()] == [(30, 5)]
    box.close()
    again = Outbox(tmp_path / "outbox.db")  # the restart of a killed process
    assert again.restore_checkpoint() == 1
    (row,) = again.pending()
    assert [w.n for w in row.windows()] == [30, 5]
    assert again.checkpointed() == [] and again.restore_checkpoint() == 0  # once only
    again.close()


def test_an_append_deletes_the_checkpoint_in_the_same_transaction(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.checkpoint([(make_window(1, n=30),)])
    box.append(make_window(1, n=42))  # the window closed: it supersedes the checkpoint
    assert box.checkpointed() == []
    assert box.restore_checkpoint() == 0
    assert [r.window().n for r in box.pending()] == [42]
    box.close()


def test_an_empty_checkpoint_deletes_the_last_one(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.checkpoint([(make_window(1),)])
    box.checkpoint([])
    assert box.checkpointed() == []
    box.close()


def test_an_unreadable_checkpoint_is_dropped_not_fatal(tmp_path, caplog):
    box = Outbox(tmp_path / "outbox.db")
    box.checkpoint([(make_window(1),)])
    box.close()
    with sqlite3.connect(tmp_path / "outbox.db") as conn:
        conn.execute("UPDATE checkpoint SET payload = ?", (b"[[{}]]",))
    again = Outbox(tmp_path / "outbox.db")
    assert again.restore_checkpoint() == 0
    assert again.pending() == [] and again.checkpointed() == []
    assert "unreadable checkpoint" in caplog.text
    again.close()


def test_peek_leaves_the_window_open():
    rng = np.random.default_rng(0)
    acc = WindowAccumulator(REF, "demo", 1, "active", clock=lambda: 0.0)
    acc.record(rng.normal(size=(7, F)), rng.dirichlet(np.ones(C), size=7), 0.001)
    seen = acc.peek(now=5.0)
    assert seen is not None and seen.n == 7 and seen.end == 5.0
    acc.record(rng.normal(size=(3, F)), rng.dirichlet(np.ones(C), size=3), 0.001)
    closed = acc.close(now=10.0)
    assert closed is not None and closed.n == 10  # the peek took nothing out


def checkpointed_predictions(outbox_db: Path) -> int:
    """Predictions in the checkpoint of a running agent's outbox (read-only, as the
    restarted agent will read it)."""
    if not outbox_db.exists():
        return 0
    with sqlite3.connect(f"file:{outbox_db}?mode=ro", uri=True) as conn:
        try:
            rows = conn.execute("SELECT payload FROM checkpoint").fetchall()
        except sqlite3.OperationalError:  # the table is not created yet
            return 0
    return sum(w["n"] for r in rows for g in json.loads(r[0]) for w in g if w["role"] == "active")


@pytest.mark.runtime
def test_kill_9_loses_no_prediction_the_checkpoint_held(
    tmp_path, trust_file, signing_keys, server, bundles, reference_x
):
    broker = EmbeddedBroker().start()
    hub = HubDouble(broker.host, broker.port, signing_keys[:2])
    dev = "dev-ckpt"
    data = tmp_path / "data"
    toml = write_toml(
        tmp_path / "agent.toml",
        device_id=dev,
        data_dir=data,
        trust_file=trust_file,
        broker=(broker.host, broker.port),
        window_s=3600,  # no window closes by itself: only the checkpoint can save them
        checkpoint_s=0.2,
    )
    daemon = Daemon(toml).start()
    try:
        url = server.add("/b/v1.efb", bundles["v1"].read_bytes())
        d1 = hub.publish_directive(hub.directive(dev, model_ref(bundles["v1"], url)))
        hub.wait_for(hub.event(dev, "activated", d1.seq), WAIT, "v1 activated")
        for row in reference_x[:40]:
            assert daemon.predict(row.tolist())["model"]["version"] == 1
        poll(lambda: checkpointed_predictions(data / "outbox.db") == 40, "a checkpoint of 40")
        daemon.kill()  # SIGKILL: the open window never closes
        daemon.start()

        def counted() -> int:
            return sum(
                w.n
                for m in hub.devices[dev].windows.values()
                for w in m.windows
                if w.role == "active"
            )

        hub.wait_for(lambda: counted() >= 40, WAIT, "the 40 predictions at the hub")
        poll(lambda: daemon.health()["buffer"]["depth"] == 0, "the outbox emptied by the ack")
        assert counted() == 40  # all of them, none twice
        assert "recovered from its checkpoint" in daemon.output()
        daemon.stop()
        assert checkpointed_predictions(data / "outbox.db") == 0  # a clean stop leaves none
    finally:
        daemon.close()
        hub.close()
        broker.stop()
