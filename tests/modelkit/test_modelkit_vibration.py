"""The synthetic 3-axis vibration windows: shapes, seeding, the classes' characteristic
frequencies, and the gain and noise knobs."""

from __future__ import annotations

import numpy as np
import pytest

from hub.modelkit import AXES, VIBRATION_CLASSES, InvalidDataError, make_vibration
from hub.modelkit.vibration import BPFO_ORDER, RATE_HZ, RESONANCE_HZ, SHAFT_HZ, WINDOW

NORMAL, IMBALANCE, BEARING = range(3)
PAD = 2048  # zero-padded FFT length: peaks located to within 0.5 Hz


def spectrum(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies and magnitudes of the mean-removed rows of ``signal [n, T]``."""
    centered = signal - signal.mean(axis=1, keepdims=True)
    return np.fft.rfftfreq(PAD, 1 / RATE_HZ), np.abs(np.fft.rfft(centered, PAD, axis=1))


def test_shapes_dtypes_and_labels() -> None:
    data = make_vibration(300, seed=1)
    assert data.x.shape == (300, WINDOW, 3) and data.x.dtype == np.float32
    assert data.y.shape == (300,) and data.y.dtype == np.int64
    assert AXES == ("ax", "ay", "az") and VIBRATION_CLASSES == ("normal", "imbalance", "bearing")
    assert set(np.unique(data.y)) == {0, 1, 2} and len(data) == 300


def test_same_seed_same_windows_other_seed_other_windows() -> None:
    a, b, c = make_vibration(50, seed=5), make_vibration(50, seed=5), make_vibration(50, seed=6)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.x, c.x)


def test_gravity_is_on_the_axial_axis() -> None:
    x = make_vibration(500, seed=2).x
    means = x.mean(axis=(0, 1))
    assert means[2] == pytest.approx(1.0, abs=0.02)
    assert abs(means[0]) < 0.05 and abs(means[1]) < 0.05


def test_imbalance_is_a_strong_radial_1x_at_the_shaft_frequency() -> None:
    data = make_vibration(600, seed=3, noise=0.02)
    imbalance = data.y == IMBALANCE
    freqs, mags = spectrum(data.x[imbalance, :, 0])
    peak = freqs[np.argmax(mags, axis=1)]
    # The dominant radial frequency of an imbalanced pump is its 1x (the shaft speed).
    np.testing.assert_allclose(peak, data.shaft_hz[imbalance], atol=3.0)
    assert np.all((data.shaft_hz >= SHAFT_HZ[0]) & (data.shaft_hz <= SHAFT_HZ[1]))
    std = data.x.std(axis=1)  # [n, 3]
    radial = std[:, :2].mean(axis=1)
    assert np.median(radial[imbalance]) > 2.5 * np.median(radial[data.y == NORMAL])
    # Mostly radial: the axial axis sees about a tenth of it.
    assert np.median(std[imbalance, 2] / radial[imbalance]) < 0.2


def test_bearing_fault_rings_at_the_resonance_and_repeats_at_the_defect_frequency() -> None:
    data = make_vibration(600, seed=4, noise=0.0)
    freqs, mags = spectrum(data.x[:, :, 0])
    band = (freqs > RESONANCE_HZ - 60) & (freqs < RESONANCE_HZ + 60)
    share = (mags[:, band] ** 2).sum(axis=1) / (mags**2).sum(axis=1)
    bearing = data.y == BEARING
    assert np.median(share[bearing]) > 0.1 > 20 * np.median(share[data.y == NORMAL])
    # Envelope analysis: the magnitude of the analytic resonance band (Hilbert envelope)
    # repeats at the outer-race defect frequency, BPFO_ORDER x the shaft speed.
    x = data.x[bearing, :, 0].astype(np.float64)
    full = np.fft.fft(x - x.mean(axis=1, keepdims=True), axis=1)
    f = np.fft.fftfreq(WINDOW, 1 / RATE_HZ)
    full[:, f < 150.0] = 0.0  # keep the positive resonance band only
    envelope = np.abs(np.fft.ifft(full, axis=1))
    env_freqs, env_mags = spectrum(envelope)
    useful = env_freqs > 40.0
    peak = env_freqs[useful][np.argmax(env_mags[:, useful], axis=1)]
    near = np.abs(peak - BPFO_ORDER * data.shaft_hz[bearing]) <= 5.0
    assert np.mean(near) >= 0.95, f"{np.count_nonzero(~near)} of {near.size} elsewhere"


def test_a_gain_change_scales_only_the_named_axis() -> None:
    base = make_vibration(200, seed=8)
    drifted = make_vibration(200, seed=8, gain={"ay": 1.3})
    np.testing.assert_array_equal(base.y, drifted.y)
    np.testing.assert_array_equal(base.x[:, :, [0, 2]], drifted.x[:, :, [0, 2]])
    np.testing.assert_allclose(drifted.x[:, :, 1], 1.3 * base.x[:, :, 1], rtol=1e-6, atol=1e-7)


def test_the_noise_knob_sets_the_noise_level() -> None:
    def residual(noise: float) -> float:
        # Without noise the axial axis is exactly 1 g + a tenth of ax (no bearing impulses
        # in normal windows), so what is left is noise.
        data = make_vibration(300, seed=9, noise=noise)
        x = data.x[data.y == NORMAL].astype(np.float64)
        return float((x[:, :, 2] - 1.0 - 0.1 * x[:, :, 0]).std())

    assert residual(0.0) < 1e-6
    assert residual(0.08) == pytest.approx(0.08 * np.sqrt(1.01), rel=0.05)
    assert residual(0.3) == pytest.approx(0.3 * np.sqrt(1.01), rel=0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, "n >= 1"),
        ({"n": 5, "noise": -0.1}, "noise"),
        ({"n": 5, "noise": float("nan")}, "noise"),
        ({"n": 5, "gain": {"gx": 1.2}}, "unknown axis 'gx'"),
        ({"n": 5, "gain": {"ax": -1.0}}, "gain of ax"),
        ({"n": 5, "gain": {"ax": float("inf")}}, "gain of ax"),
    ],
)
def test_malformed_knobs_rejected_with_one_line(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidDataError, match=message) as caught:
        make_vibration(seed=0, **kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
