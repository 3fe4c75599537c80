"""Counting predictions into the current metrics window, cheaply per sample.

A :class:`WindowAccumulator` counts every prediction of one model into the bins the
bundle's reference statistics fix and returns the window as a
:class:`~edge_agent.contract.window.MetricsWindow` (see that module for what a window
holds, its invariants and its wire form). The native hot path
(``edge_agent/inference/_hotpath.c``) updates the same arrays.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt

from edge_agent.contract.fields import safe_name
from edge_agent.contract.histogram import bin_indices, n_counts
from edge_agent.contract.input_schema import SUMMARIES, InputSchema
from edge_agent.contract.reference import ReferenceStats
from edge_agent.contract.window import (
    LATENCY_EDGES_MS,
    MAX_ERROR_KINDS,
    MOMENT_LIMIT,
    ROLES,
    ChannelValues,
    FeatureWindow,
    MetricsWindow,
    Role,
)
from edge_agent.errors import ValidationError

_LATENCY_EDGES: Final = np.asarray(LATENCY_EDGES_MS, dtype=np.float64)
_NUMERIC_KINDS: Final = "biuf"


class WindowAccumulator:
    """Counts one model's predictions into the current window; cheap per sample.

    :meth:`record` only copies a sample into preallocated buffers; every ``batch``
    samples (and at :meth:`close`) the buffer is folded into the window in a few
    vectorised passes. All methods may be called from different threads.
    """

    def __init__(
        self,
        reference: ReferenceStats,
        model_name: str,
        model_version: int,
        role: str = "active",
        *,
        n_classes: int | None = None,
        batch: int = 256,
        clock: Callable[[], float] = time.time,
        schema: InputSchema | None = None,
        sample_shape: tuple[int, ...] | None = None,
        monitored: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
        channel_values: Callable[[np.ndarray], np.ndarray] | None = None,
        channel_ranges: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Prepare buffers for ``reference``'s features and classes.

        ``n_classes`` defaults to the reference's; ``schema`` (optional) gives the valid
        ranges for out-of-range counting, feature by feature in input order.

        ``monitored`` (with the ``sample_shape`` it takes) makes the window count values
        derived from each sample rather than the sample itself: samples of that shape are
        buffered as they come (a copy, no arithmetic) and every block is mapped, with its
        outputs, to ``[m, F]`` by ``monitored(x [m, *sample_shape], p [m, C])`` before it
        is counted (a tensor's per-channel summaries, see
        :meth:`~edge_agent.contract.input_schema.InputSchema.summarize`).

        ``channel_values`` (with ``monitored``, and a reference with channel bins) maps
        a raw block to every value at every position, ``[m * positions, channels]``
        (:meth:`~edge_agent.contract.input_schema.InputSchema.channels_last`); the window
        then also counts each channel's values over the reference's channel bins.

        ``channel_ranges`` (with ``channel_values``: each channel's valid ``lo`` and
        ``hi``, float64 ``[channels]``, -inf/inf where unbounded) counts, for each
        channel, the samples holding a value of that channel out of its range (NaN is
        not out of range) in the ``out_of_range`` of each of that channel's
        :data:`~edge_agent.contract.input_schema.SUMMARIES` (the first
        ``channels * len(SUMMARIES)`` monitored values, in the schema's order).

        Raises:
            ValidationError: bad name, version, role or batch; no features; the class
                count or schema does not fit the reference; or ``channel_ranges`` do
                not fit the channels.
        """
        if role not in ROLES:
            raise ValidationError(f"monitor: role {role!r} is not one of {ROLES}")
        if isinstance(model_version, bool) or model_version < 1:
            raise ValidationError(f"monitor: model version must be >= 1, got {model_version}")
        if batch < 1:
            raise ValidationError(f"monitor: batch must be >= 1, got {batch}")
        n_features = len(reference.features)
        if n_features == 0:
            raise ValidationError("monitor: the reference has no features")
        ref_classes = len(reference.class_counts)
        n_classes = ref_classes if n_classes is None else n_classes
        if n_classes < 1 or (ref_classes and n_classes != ref_classes):
            raise ValidationError(
                f"monitor: the model has {n_classes} classes, the reference {ref_classes}"
            )
        self.model_name = safe_name(model_name, "monitor: model name")
        self.model_version = model_version
        self.role: Role = cast(Role, role)
        self.n_features = n_features
        self.n_classes = n_classes
        self.batch = batch
        self._clock = clock
        self._lock = threading.Lock()
        self._edges = reference.edges()
        sizes = [n_counts(e) for e in self._edges]
        widest = max(e.shape[0] for e in self._edges)
        # All features' edges in one matrix, padded with NaN (never <= any value), so
        # one broadcast comparison bins a whole block: see _bin_block.
        self._edge_matrix = np.full((n_features, widest), np.nan)
        for j, e in enumerate(self._edges):
            self._edge_matrix[j, : e.shape[0]] = e
        self._last_edge = np.array([e[-1] for e in self._edges])
        self._k = np.array([e.shape[0] - 1 for e in self._edges], dtype=np.intp)
        # ``x >= edge`` for every edge but each feature's last, which is tested with
        # ``x > last`` instead (the last interior bin is closed); see _bin_block.
        below_last = self._edge_matrix.copy()
        below_last[np.arange(n_features), self._k] = np.nan
        self._edge_columns = [below_last[:, i].copy() for i in range(widest - 1)]
        self._nan_bin = self._k + 2
        self._idx_dtype = np.dtype(np.uint8 if widest < 250 else np.intp)
        self._offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.intp)
        self._bin_offsets = self._offsets[:-1].copy()
        self._conf_edges = np.asarray(reference.confidence.edges, dtype=np.float64)
        ranges = _ranges(schema, n_features)
        # Unbounded ranges count nothing (NaN is not out of range): skip the pass.
        unbounded = ranges is None or not np.isfinite(np.concatenate(ranges)).any()
        self._ranges = None if unbounded else ranges
        self._monitored = monitored
        self._x_shape = (n_features,) if monitored is None else tuple(sample_shape or ())
        if monitored is not None and not self._x_shape:
            raise ValidationError("monitor: a monitored mapping needs the sample shape")
        self._p_shape = (n_classes,)
        self._x = np.empty((batch, *self._x_shape), dtype=np.float64)
        self._channel_values = channel_values if reference.channels else None
        #: Maps a raw block to its channel values (also without channel bins: ranges).
        self._channels_last = channel_values
        self._channel_edges = [np.asarray(h.edges, dtype=np.float64) for h in reference.channels]
        # One flat array (the native path counts into it in place), one view per channel.
        channel_sizes = [n_counts(e) for e in self._channel_edges]
        self._channel_offsets = np.concatenate([[0], np.cumsum(channel_sizes)]).astype(np.int64)
        self._channel_hist = np.zeros(int(self._channel_offsets[-1]), dtype=np.int64)
        self._channel_counts = [
            self._channel_hist[a:b] for a, b in itertools.pairwise(self._channel_offsets.tolist())
        ]
        self._channel_ranges = _channel_ranges(channel_ranges, channel_values, n_features)
        n_channels = max(len(self._channel_edges), 1)
        self._positions = int(np.prod(self._x_shape)) // n_channels if self._x_shape else 1
        self._p = np.empty((batch, n_classes), dtype=np.float64)
        self._lat: list[float] = []
        self._pending = 0
        self._hist = np.zeros(int(self._offsets[-1]), dtype=np.int64)
        self._count = np.zeros(n_features, dtype=np.int64)
        self._mean = np.zeros(n_features, dtype=np.float64)
        self._m2 = np.zeros(n_features, dtype=np.float64)
        self._min = np.full(n_features, np.inf)
        self._max = np.full(n_features, -np.inf)
        self._oor = np.zeros(n_features, dtype=np.int64)
        self._classes = np.zeros(n_classes, dtype=np.int64)
        self._conf = np.zeros(n_counts(self._conf_edges), dtype=np.int64)
        self._conf_sum = np.zeros(n_counts(self._conf_edges), dtype=np.float64)
        typicality = None if reference.calibration is None else reference.calibration.typicality
        self._typ_dirs = np.zeros((0, n_features))
        self._typ_mean = np.zeros(n_features)
        if typicality is not None and typicality.directions:
            self._typ_dirs = np.asarray(typicality.directions, dtype=np.float64)
            self._typ_mean = np.asarray(typicality.mean, dtype=np.float64)
        #: Whether windows carry typicality (the reference's map has directions).
        self._typ_active = self._typ_dirs.shape[0] > 0
        self._typ_n = np.zeros(1, dtype=np.int64)
        self._typ_sum = np.zeros(1, dtype=np.float64)
        self._latency = np.zeros(n_counts(_LATENCY_EDGES), dtype=np.int64)
        self._errors: dict[str, int] = {}
        self._n = 0
        # Predictions counted by the native path (edge_agent/inference/_hotpath.c), which updates
        # these arrays in place: so every update here is in place too.
        self._tally = np.zeros(1, dtype=np.int64)
        # The native runner counting into these arrays, if any (weakly: it is owned by
        # the serving model, and a cycle would keep a retired model's memory alive).
        self._native: weakref.ref[Any] | None = None
        self._compared = 0
        self._agreed = 0
        self._start = float(clock())

    @property
    def start(self) -> float:
        """When the current window started (unix seconds)."""
        return self._start

    @property
    def n(self) -> int:
        """Predictions recorded in the current window (folded or still buffered)."""
        return self._n + int(self._tally[0]) + self._pending

    @property
    def n_pending(self) -> int:
        """Predictions buffered but not yet folded into the histograms."""
        return self._pending

    def record(self, x: npt.ArrayLike, probs: npt.ArrayLike, latency_s: float) -> None:
        """Record one invocation: inputs ``[F]`` or ``[B, F]``, outputs ``[C]`` or ``[B, C]``.

        ``latency_s`` is the invocation's latency; it is counted once per call. Inputs
        may hold NaN or infinity (they are binned, not refused: refusing is the
        schema's job, before the model runs).

        Raises:
            ValidationError: shapes do not fit the features and classes, or not numbers.
        """
        xa = np.asarray(x)
        pa = np.asarray(probs)
        if xa.shape == self._x_shape and pa.shape == self._p_shape:
            rows = 1
        elif (
            xa.ndim == len(self._x_shape) + 1
            and pa.ndim == 2
            and xa.shape[1:] == self._x_shape
            and pa.shape[1:] == self._p_shape
            and xa.shape[0] == pa.shape[0]
        ):
            rows = xa.shape[0]
        else:
            dims = ", ".join(str(d) for d in self._x_shape)
            raise ValidationError(
                f"monitor: inputs {list(xa.shape)} / outputs {list(pa.shape)} do not fit "
                f"[{dims}] / [{self.n_classes}] or [B, {dims}] / [B, {self.n_classes}]"
            )
        if xa.dtype.kind not in _NUMERIC_KINDS or pa.dtype.kind not in _NUMERIC_KINDS:
            raise ValidationError(f"monitor: inputs and outputs must be numbers ({xa.dtype})")
        if rows == 0:
            return
        with self._lock:
            i = self._pending
            self._lat.append(latency_s)
            if i + rows <= self.batch:
                self._x[i : i + rows] = xa
                self._p[i : i + rows] = pa
                self._pending = i + rows
                if self._pending == self.batch:
                    self._flush()
            else:
                self._flush()
                self._fold(
                    np.asarray(xa, dtype=np.float64).reshape(-1, *self._x_shape),
                    np.asarray(pa, dtype=np.float64).reshape(-1, self.n_classes),
                )

    def record_error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` errors of ``kind`` (``invoke_error``, ``nan_output``, ``invalid_input``...).

        Raises:
            ValidationError: ``kind`` is not a safe name, ``n`` < 1, or too many kinds.
        """
        if isinstance(n, bool) or n < 1:
            raise ValidationError(f"monitor: error count must be >= 1, got {n}")
        with self._lock:
            if kind not in self._errors:
                safe_name(kind, "monitor: error kind")
                if len(self._errors) >= MAX_ERROR_KINDS:
                    raise ValidationError(f"monitor: more than {MAX_ERROR_KINDS} error kinds")
            self._errors[kind] = self._errors.get(kind, 0) + int(n)

    def record_shadow(self, champion_probs: npt.ArrayLike, challenger_probs: npt.ArrayLike) -> None:
        """Count how often the challenger's top-1 class equals the champion's.

        Rows where either output holds NaN are compared but never agree.

        Raises:
            ValidationError: the two outputs differ in shape or are not ``[C]``/``[B, C]``.
        """
        a = np.asarray(champion_probs, dtype=np.float64)
        b = np.asarray(challenger_probs, dtype=np.float64)
        if a.shape != b.shape or a.ndim not in (1, 2) or a.shape[-1] == 0:
            raise ValidationError(
                f"monitor: champion {list(a.shape)} and challenger {list(b.shape)} outputs "
                "must both be [C] or [B, C]"
            )
        a = a.reshape(-1, a.shape[-1])
        b = b.reshape(-1, b.shape[-1])
        valid = ~(np.isnan(a).any(axis=1) | np.isnan(b).any(axis=1))
        agreed = int(np.count_nonzero(valid & (a.argmax(axis=1) == b.argmax(axis=1))))
        with self._lock:
            self._compared += a.shape[0]
            self._agreed += agreed

    def close(self, now: float | None = None) -> MetricsWindow | None:
        """Close the current window and start the next one at ``now`` (default: the clock).

        Returns None when nothing was recorded (no predictions, errors or comparisons).
        A clock that went backwards gives a window with ``end == start``, and the next
        window starts at ``now``, the clock as it is after the jump (not at the jumped
        time, which would stamp every window there until the clock caught up with it).
        """
        with self._lock:
            self._flush()
            at = float(self._clock() if now is None else now)
            end = max(at, self._start)
            window = None
            if self._n or self._tally[0] or self._errors or self._compared:
                window = self._snapshot(end)
            self._reset(at)
        return window

    def peek(self, now: float | None = None) -> MetricsWindow | None:
        """The current window as it would close at ``now``, without closing it (None
        when nothing was recorded): what the agent checkpoints."""
        with self._lock:
            self._flush()
            end = max(float(self._clock() if now is None else now), self._start)
            if self._n or self._tally[0] or self._errors or self._compared:
                return self._snapshot(end)
            return None

    def attach_native(self, runner: Any) -> None:
        """Have :meth:`close` (and every fold) first call ``runner.drain()``, which folds
        the samples the native path buffered (under this accumulator's lock). Held
        weakly: a runner that is gone has nothing buffered."""
        with self._lock:
            self._native = weakref.ref(runner)

    def _flush(self) -> None:
        runner = None if self._native is None else self._native()
        if runner is not None:
            runner.drain()
        if self._pending:
            m = self._pending
            self._pending = 0
            self._fold(self._x[:m], self._p[:m])
        if self._lat:
            ms = np.asarray(self._lat, dtype=np.float64) * 1000.0
            self._lat.clear()
            self._latency += np.bincount(
                bin_indices(_LATENCY_EDGES, ms), minlength=self._latency.size
            )

    def _fold(self, x: np.ndarray, p: np.ndarray) -> None:
        """Add a block of samples ``x [m, F]`` (or ``[m, *sample_shape]``, mapped to
        ``[m, F]`` first) with outputs ``p [m, C]`` to the window."""
        if self._channel_values is not None:
            values = self._channel_values(x)
            for j, edges in enumerate(self._channel_edges):
                self._channel_counts[j] += np.bincount(
                    bin_indices(edges, values[:, j]), minlength=self._channel_counts[j].size
                )
        if self._channel_ranges is not None:
            self._count_channel_ranges(x)
        if self._monitored is not None:
            x = self._monitored(x, p)
        m = x.shape[0]
        idx = self._bin_block(x) + self._bin_offsets  # an intp copy: one index per value
        self._hist += np.bincount(idx.ravel(), minlength=self._hist.size)
        self._fold_moments(x)
        if self._ranges is not None:
            lo, hi = self._ranges
            self._oor += np.count_nonzero((x < lo) | (x > hi), axis=0)
        top1 = p.max(axis=1)
        valid = ~np.isnan(top1)
        winners = p.argmax(axis=1) if valid.all() else p[valid].argmax(axis=1)
        self._classes += np.bincount(winners, minlength=self.n_classes)
        conf_idx = bin_indices(self._conf_edges, top1)
        self._conf += np.bincount(conf_idx, minlength=self._conf.size)
        finite = np.isfinite(top1)
        self._conf_sum += np.bincount(
            conf_idx,
            weights=top1 if finite.all() else np.where(finite, top1, 0.0),
            minlength=self._conf_sum.size,
        )
        if self._typ_active:
            self._fold_typicality(x)
        self._n += m

    def _count_channel_ranges(self, x: np.ndarray) -> None:
        """Count the samples of a raw block ``x [m, *sample_shape]`` holding a value out
        of its channel's range, per channel, in that channel's summaries."""
        ranges, channels_last = self._channel_ranges, self._channels_last
        if ranges is None or channels_last is None:
            return
        lo, hi = ranges
        m, n_channels = x.shape[0], lo.shape[0]
        v = channels_last(x).reshape(m, -1, n_channels)
        missed = np.count_nonzero(((v < lo) | (v > hi)).any(axis=1), axis=0)
        self._oor[: n_channels * len(SUMMARIES)] += np.repeat(missed, len(SUMMARIES))

    def _fold_typicality(self, x: np.ndarray) -> None:
        """Count rows with all inputs finite and a finite energy, and sum the energies."""
        finite = np.isfinite(x).all(axis=1)
        rows = x if finite.all() else x[finite]
        with np.errstate(over="ignore", invalid="ignore"):
            z = (rows - self._typ_mean) @ self._typ_dirs.T
            energy = np.einsum("ij,ij->i", z, z)
        ok = np.isfinite(energy)
        if not ok.all():
            energy = energy[ok]
        self._typ_n[0] += energy.shape[0]
        self._typ_sum[0] += float(energy.sum())

    def _bin_block(self, x: np.ndarray) -> np.ndarray:
        """``bin_indices`` for every feature of ``x [m, F]`` at once (same layout).

        Counts the edges each value reaches: one comparison pass per edge rank, all
        features at once (NaN-padded edges never count), accumulated in small integers.
        """
        idx = np.zeros(x.shape, dtype=self._idx_dtype)
        hit = np.empty(x.shape, dtype=np.bool_)
        step = hit.view(np.uint8)
        with np.errstate(invalid="ignore"):
            for column in self._edge_columns:
                np.greater_equal(x, column, out=hit)
                idx += step
            np.greater(x, self._last_edge, out=hit)  # the last interior bin is closed
            idx += step
            np.isnan(x, out=hit)
        if hit.any():
            return np.where(hit, self._nan_bin, idx)
        return idx

    def record_one(self, x: np.ndarray, probs: np.ndarray, latency_s: float) -> None:
        """:meth:`record` for one validated sample: ``x [F]`` and ``probs [C]``, no checks.

        The serving hot path: the caller guarantees the shapes (the model produced
        ``probs`` from ``x``), so only a copy into the buffers remains.
        """
        with self._lock:
            i = self._pending
            self._x[i] = x
            self._p[i] = probs
            self._lat.append(latency_s)
            self._pending = i + 1
            if i + 1 == self.batch:
                self._flush()

    def native_counters(self) -> dict[str, Any]:
        """The arrays the native one-sample path counts into, in place (keyword arguments
        of ``edge_agent.inference._hotpath.Runner``), with the lock that guards them.

        For a tensor (``channel_values`` given) also where each channel's values sit in
        a sample (``chan_index``, ``[channels, positions]`` flat offsets in the
        channels-last order :meth:`InputSchema.channels_last` gives), the channel bins
        and counts, and the channel ranges.
        """
        unbounded = np.zeros(self.n_features)  # not read: count_range is False
        lo, hi = self._ranges if self._ranges is not None else (unbounded, unbounded)
        channels_last = self._channels_last
        chan_index = np.zeros(0, dtype=np.int64)
        n_channels = 0
        if channels_last is not None and self._monitored is not None:  # a tensor
            size = int(np.prod(self._x_shape))
            at = np.arange(size, dtype=np.float64).reshape(1, *self._x_shape)
            where = channels_last(at)  # [positions, channels]
            n_channels = int(where.shape[1])
            chan_index = np.ascontiguousarray(where.T, dtype=np.int64).ravel()
        no_range = np.zeros(n_channels)  # not read: chan_range is False
        chan_lo, chan_hi = (
            self._channel_ranges if self._channel_ranges is not None else (no_range, no_range)
        )
        return {
            "monitor_lock": self._lock,
            "edges": np.ascontiguousarray(np.concatenate(self._edges), dtype=np.float64),
            "edge_off": np.concatenate([[0], np.cumsum([e.shape[0] for e in self._edges])]).astype(
                np.int64
            ),
            "hist": self._hist,
            "hist_off": self._offsets[:-1].astype(np.int64),
            "count": self._count,
            "mean": self._mean,
            "m2": self._m2,
            "vmin": self._min,
            "vmax": self._max,
            "count_range": self._ranges is not None,
            "moment_limit": MOMENT_LIMIT,
            "lo": np.ascontiguousarray(lo, dtype=np.float64),
            "hi": np.ascontiguousarray(hi, dtype=np.float64),
            "oor": self._oor,
            "classes": self._classes,
            "conf_edges": np.ascontiguousarray(self._conf_edges, dtype=np.float64),
            "conf": self._conf,
            "conf_sum": self._conf_sum,
            "lat_edges": _LATENCY_EDGES,
            "latency": self._latency,
            "tally": self._tally,
            "typ_dirs": np.ascontiguousarray(self._typ_dirs, dtype=np.float64).ravel(),
            "typ_mean": np.ascontiguousarray(self._typ_mean, dtype=np.float64),
            "typ_n": self._typ_n,
            "typ_sum": self._typ_sum,
            "chan_index": chan_index,
            "n_channels": n_channels,
            "chan_edges": np.ascontiguousarray(
                np.concatenate([np.zeros(0), *self._channel_edges]), dtype=np.float64
            ),
            "chan_edge_off": np.concatenate(
                [[0], np.cumsum([e.shape[0] for e in self._channel_edges])]
            ).astype(np.int64),
            "chan_hist": self._channel_hist,
            "chan_hist_off": self._channel_offsets[:-1].copy(),
            "chan_range": self._channel_ranges is not None,
            "chan_lo": np.ascontiguousarray(chan_lo, dtype=np.float64),
            "chan_hi": np.ascontiguousarray(chan_hi, dtype=np.float64),
        }

    def _fold_moments(self, x: np.ndarray) -> None:
        ok = np.abs(x) <= MOMENT_LIMIT  # False for NaN and +-inf
        c: np.ndarray | int
        if ok.all():  # the usual block: the same sums without masking
            c = x.shape[0]
            mean_b = x.sum(axis=0) / max(c, 1)
            d = x - mean_b
            block_min, block_max = x.min(axis=0), x.max(axis=0)
        else:
            c = np.count_nonzero(ok, axis=0)
            safe_c = np.maximum(c, 1)
            mean_b = np.where(ok, x, 0.0).sum(axis=0) / safe_c
            d = np.where(ok, x - mean_b, 0.0)
            block_min = np.where(ok, x, np.inf).min(axis=0)
            block_max = np.where(ok, x, -np.inf).max(axis=0)
        m2_b = np.einsum("ij,ij->j", d, d)
        n_a = self._count
        total = n_a + c
        delta = mean_b - self._mean
        safe_total = np.maximum(total, 1)
        # In place: the native path holds views of these arrays.
        self._mean[...] = np.where(n_a == 0, mean_b, self._mean + delta * c / safe_total)
        self._m2 += m2_b + delta * delta * n_a * c / safe_total
        self._count[...] = total
        np.minimum(self._min, block_min, out=self._min)
        np.maximum(self._max, block_max, out=self._max)

    def _snapshot(self, end: float) -> MetricsWindow:
        hist = self._hist.tolist()
        off = self._offsets.tolist()
        features = []
        for j in range(self.n_features):
            count = int(self._count[j])
            features.append(
                FeatureWindow(
                    counts=tuple(hist[off[j] : off[j + 1]]),
                    count=count,
                    mean=float(self._mean[j]) if count else 0.0,
                    m2=float(self._m2[j]) if count else 0.0,
                    min=float(self._min[j]) if count else None,
                    max=float(self._max[j]) if count else None,
                    out_of_range=int(self._oor[j]),
                )
            )
        return MetricsWindow(
            model_name=self.model_name,
            model_version=self.model_version,
            role=self.role,
            start=self._start,
            end=end,
            n=self._n + int(self._tally[0]),
            features=tuple(features),
            class_counts=tuple(self._classes.tolist()),
            confidence=tuple(self._conf.tolist()),
            latency=tuple(self._latency.tolist()),
            errors=dict(sorted(self._errors.items())),
            compared=self._compared,
            agreed=self._agreed,
            confidence_sum=tuple(self._conf_sum.tolist()),
            typicality_n=int(self._typ_n[0]) if self._typ_active else None,
            typicality_sum=float(self._typ_sum[0]) if self._typ_active else None,
            channel_values=(
                None
                if self._channel_values is None
                else ChannelValues(
                    self._positions, tuple(tuple(c.tolist()) for c in self._channel_counts)
                )
            ),
        )

    def _reset(self, start: float) -> None:
        for arr in (self._hist, self._count, self._oor, self._classes, self._conf, self._latency):
            arr.fill(0)
        self._mean.fill(0.0)
        self._m2.fill(0.0)
        self._conf_sum.fill(0.0)
        self._typ_n.fill(0)
        self._typ_sum.fill(0.0)
        self._channel_hist.fill(0)
        self._min.fill(np.inf)
        self._max.fill(-np.inf)
        self._tally.fill(0)
        self._errors = {}
        self._n = self._compared = self._agreed = 0
        self._start = start


def _ranges(schema: InputSchema | None, n_features: int) -> tuple[np.ndarray, np.ndarray] | None:
    if schema is None:
        return None
    if len(schema.features) != n_features:
        raise ValidationError(
            f"monitor: the schema has {len(schema.features)} features, the reference {n_features}"
        )
    lo = np.array([-np.inf if f.min is None else f.min for f in schema.features])
    hi = np.array([np.inf if f.max is None else f.max for f in schema.features])
    return lo, hi


def _channel_ranges(
    ranges: tuple[np.ndarray, np.ndarray] | None,
    channel_values: Callable[[np.ndarray], np.ndarray] | None,
    n_features: int,
) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-channel ranges to count out-of-range values against (None: unbounded).

    Raises:
        ValidationError: ranges without ``channel_values``, of different lengths, or
            more channels than the monitored values have summaries for.
    """
    if ranges is None:
        return None
    lo, hi = (np.asarray(r, dtype=np.float64).reshape(-1) for r in ranges)
    if channel_values is None or lo.shape != hi.shape or lo.shape[0] * len(SUMMARIES) > n_features:
        raise ValidationError(
            "monitor: channel ranges need channel values and one bound pair per channel"
        )
    if not np.isfinite(np.concatenate([lo, hi])).any():
        return None  # unbounded: nothing is ever out of range
    return lo, hi
