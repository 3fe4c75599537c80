"""The one-sample fast paths count exactly what the general paths count."""

from __future__ import annotations

import numpy as np

from edge_agent.contract.histogram import count
from edge_agent.inference.accumulator import WindowAccumulator
from tests.agent.test_monitor import REF, C, F, FakeClock


def test_block_binning_matches_bin_indices_at_edges_nan_and_infinity() -> None:
    acc = WindowAccumulator(REF, "demo", 1, batch=64, clock=FakeClock())
    edges = REF.edges()
    rng = np.random.default_rng(3)
    x = rng.normal(loc=np.arange(F), scale=3.0, size=(300, F))
    for j, e in enumerate(edges):  # values exactly on every edge, the last one included
        x[: e.shape[0], j] = e
    x[-1], x[-2], x[-3] = np.nan, np.inf, -np.inf
    for row in x:
        acc.record(row, np.full(C, 1.0 / C), 0.001)
    w = acc.close()
    assert w is not None
    for j, (f, e) in enumerate(zip(w.features, edges, strict=True)):
        assert f.counts == tuple(count(e, x[:, j]).tolist())
