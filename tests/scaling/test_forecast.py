"""The accuracy forecast's two fits recover the curves synthetic sweeps are generated from."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.scaling.fit import FitError
from runtime.scaling.forecast import (
    Sigmoid,
    fit_nll_law,
    fit_sigmoid,
    forecast_accuracy,
    nll_at_optimum,
)

TRUE_SIGMOID = Sigmoid(k=2.5, midpoint=3.2, chance=0.25)
B, BETA = 300.0, -0.16  # NLL*(C) = B * C^beta


@pytest.mark.parametrize(("k", "mid", "chance"), [(2.5, 3.2, 0.25), (8.0, 1.0, 0.5), (0.7, 5.0, 0.0)])
def test_sigmoid_fit_recovers_known_curves(k: float, mid: float, chance: float) -> None:
    truth = Sigmoid(k, mid, chance)
    nll = np.linspace(mid - 2.5 / k, mid + 2.5 / k, 12)
    fitted = fit_sigmoid(nll, truth(nll), chance)
    assert fitted.k == pytest.approx(k, rel=0.01)
    assert fitted.midpoint == pytest.approx(mid, abs=0.01)


def test_sigmoid_fit_tolerates_noise() -> None:
    nll = np.linspace(2.0, 4.5, 16)
    noisy = TRUE_SIGMOID(nll) + np.random.default_rng(0).normal(0, 0.01, nll.shape)
    fitted = fit_sigmoid(nll, noisy, 0.25)
    assert fitted.k == pytest.approx(2.5, rel=0.15)
    assert fitted.midpoint == pytest.approx(3.2, abs=0.05)


def test_sigmoid_is_chance_at_high_nll_and_one_at_zero() -> None:
    assert TRUE_SIGMOID(50.0) == pytest.approx(0.25)
    assert TRUE_SIGMOID(-50.0) == pytest.approx(1.0)


def test_nll_law_recovers_a_power_law() -> None:
    budgets = [1e12, 2e12, 4e12, 8e12]
    b, beta = fit_nll_law(budgets, [B * c**BETA for c in budgets])
    assert beta == pytest.approx(BETA, abs=1e-9)
    assert b == pytest.approx(B, rel=1e-6)


def test_nll_at_optimum_reads_the_parabola_at_the_optimal_tokens() -> None:
    tokens = [1e5, 4e5, 1.6e6, 6.4e6]
    nll = [2.0 + 0.1 * (math.log(t) - math.log(8e5)) ** 2 for t in tokens]
    assert nll_at_optimum(tokens, nll, 8e5) == pytest.approx(2.0, abs=1e-9)


def test_forecast_end_to_end_from_a_synthetic_sweep() -> None:
    """Runs whose optimum NLL follows B·C^β and whose accuracy follows the sigmoid: the
    forecast at a 10x budget is what the true curves give there."""
    budgets = [5e11, 1e12, 2e12]
    optima, runs = [], []
    for c in budgets:
        opt_tokens = 1e-3 * c**0.8
        optima.append((c, opt_tokens))
        for factor in (0.25, 0.5, 1.0, 2.0, 4.0):
            tokens = opt_tokens * factor
            nll = B * c**BETA + 0.05 * math.log(factor) ** 2
            runs.append((c, tokens, nll, float(TRUE_SIGMOID(nll))))
    f = forecast_accuracy(optima, runs, 0.25, 2e13)
    assert f.nll_beta == pytest.approx(BETA, abs=1e-6)
    assert f.target_nll == pytest.approx(B * 2e13**BETA, rel=1e-6)
    assert f.target_accuracy == pytest.approx(float(TRUE_SIGMOID(B * 2e13**BETA)), abs=0.005)
    assert f.rmse < 1e-3 and not f.warnings
    data = f.to_json()
    assert data["step1"]["beta"] == f.nll_beta and len(data["step2"]["points"]) == 15


def test_flat_accuracy_and_rising_nll_are_warned_about() -> None:
    runs = [(c, t, 3.0 + 1e-13 * c, 0.3) for c in (1e12, 2e12) for t in (5e5, 1e6, 2e6)]
    f = forecast_accuracy([(1e12, 1e6), (2e12, 1e6)], runs, 0.25, 1e13)
    assert any("does not fall" in w for w in f.warnings)
    assert any("barely varies" in w for w in f.warnings)


def test_too_little_data_is_a_fit_error() -> None:
    with pytest.raises(FitError, match="at least 3 runs"):
        fit_sigmoid([1.0, 2.0], [0.5, 0.4], 0.25)
    with pytest.raises(FitError, match="at least 2 budgets"):
        fit_nll_law([1e12, 1e12], [3.0, 3.0])
    with pytest.raises(FitError, match="no downstream eval"):
        forecast_accuracy([(1e12, 1e6), (2e12, 1e6)],
                          [(1e12, t, 3.0, 0.4) for t in (5e5, 1e6, 2e6)], 0.25, 1e13)
