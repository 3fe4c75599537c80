"""The chi-square machinery drift decisions rest on, against closed forms and tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from hub.stats import StatsError, chi2_isf, chi2_sf, gamma_q, holm, ncx2_sf


@pytest.mark.parametrize("x", [1e-8, 0.01, 0.5, 1.0, 2.0, 3.84, 10.0, 50.0, 200.0, 700.0])
def test_chi2_sf_equals_its_closed_forms_for_one_and_two_degrees_of_freedom(x: float) -> None:
    assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2.0)), rel=1e-12, abs=1e-300)
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2.0), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize(
    ("x", "df", "p"),
    [  # critical values from standard chi-square tables
        (3.841458820694124, 1, 0.05),
        (6.634896601021214, 1, 0.01),
        (21.665994333461924, 9, 0.01),
        (27.877164871256568, 9, 0.001),
        (29.588298445074418, 10, 0.001),
        (124.34211340400407, 100, 0.05),
    ],
)
def test_chi2_sf_and_its_inverse_match_table_values(x: float, df: int, p: float) -> None:
    assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)
    assert chi2_isf(p, df) == pytest.approx(x, rel=1e-9)


def test_chi2_sf_is_a_survival_function() -> None:
    xs = np.linspace(0.0, 60.0, 200)
    for df in (1, 3, 9, 30):
        values = [chi2_sf(float(x), df) for x in xs]
        assert values[0] == 1.0
        assert all(a >= b for a, b in itertools.pairwise(values))
        assert 0.0 <= values[-1] < 1e-3


def test_chi2_sf_agrees_with_simulation() -> None:
    rng = np.random.default_rng(0)
    draws = rng.chisquare(7, size=200_000)
    for x in (2.0, 7.0, 14.0):
        assert chi2_sf(x, 7) == pytest.approx(float((draws >= x).mean()), abs=0.005)


def test_noncentral_power_is_close_to_simulation() -> None:
    rng = np.random.default_rng(1)
    crit = chi2_isf(0.001, 9)
    for nc in (5.0, 20.0, 40.0):
        sim = float((rng.noncentral_chisquare(9, nc, size=200_000) > crit).mean())
        assert ncx2_sf(crit, 9, nc) == pytest.approx(sim, abs=0.02)  # Patnaik: sizing only


def test_holm_adjusts_step_down_and_keeps_input_order() -> None:
    adjusted, thresholds = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1, max 0.06)
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert thresholds == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])
    assert holm([], 0.01) == ([], [])


@pytest.mark.parametrize(
    "call",
    [
        lambda: gamma_q(0.0, 1.0),
        lambda: gamma_q(1.0, float("nan")),
        lambda: chi2_sf(1.0, 0),
        lambda: chi2_isf(0.0, 3),
        lambda: chi2_isf(0.5, -1),
        lambda: ncx2_sf(1.0, 3, -1.0),
        lambda: holm([0.5], 1.5),
        lambda: holm([1.5], 0.05),
    ],
)
def test_arguments_outside_the_domain_are_refused(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(StatsError):
        call()
