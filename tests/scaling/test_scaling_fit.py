"""The IsoFLOP fit recovers a known law from synthetic losses and refuses what it cannot fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from runtime.scaling.fit import (
    FitError,
    PowerLaw,
    fit_budget,
    fit_isoflop,
    fit_power_law,
    predict,
)

BUDGETS = [1e18, 3e18, 1e19, 3e19, 1e20, 3e20]


def synthetic_sweep(alpha: float, a: float, *, noise: float, seed: int = 0,
                    offsets: tuple[float, ...] = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
                    skew: float = 0.0) -> list[tuple[float, float, float]]:
    """(budget, tokens, loss) triples whose losses are parabolas in ln(tokens) centred on the
    known optimum N*(C) = a·C^alpha; the sampled sizes are deliberately off-centre (skew) so
    the fit must find the vertex rather than pick the middle run."""
    rng = np.random.default_rng(seed)
    runs = []
    for i, c in enumerate(BUDGETS):
        centre = math.log(a * c**alpha)
        floor = 3.0 - 0.1 * i  # larger budgets reach lower losses, as in the paper
        for off in offsets:
            x = centre + off + skew
            loss = floor + 0.08 * (x - centre) ** 2 + rng.normal(0.0, noise)
            runs.append((c, math.exp(x), loss))
    return runs


@pytest.mark.parametrize(("alpha", "a"), [(0.53, 0.29), (0.5, 1.2), (0.45, 8.0)])
def test_recovers_known_law(alpha: float, a: float) -> None:
    fit = fit_isoflop(synthetic_sweep(alpha, a, noise=0.002, skew=0.3))
    assert fit.law.alpha == pytest.approx(alpha, abs=0.02)
    assert fit.law.A == pytest.approx(a, rel=0.10)
    assert not fit.warnings
    for o in fit.optima:
        assert o.optimal_tokens == pytest.approx(a * o.budget**alpha, rel=0.10)
        assert o.optimal_params == pytest.approx(o.budget / (6 * o.optimal_tokens))


def test_noiseless_fit_is_exact() -> None:
    fit = fit_isoflop(synthetic_sweep(0.53, 0.29, noise=0.0, skew=0.4))
    assert fit.law.alpha == pytest.approx(0.53, abs=1e-9)
    assert fit.law.A == pytest.approx(0.29, rel=1e-6)
    assert max(abs(r) for r in fit.law.residuals) < 1e-9
    assert all(abs(r) < 1e-9 for o in fit.optima for r in o.residuals)


def test_paper_constants_give_605b_not_402b() -> None:
    """Llama 3's α = 0.53, A = 0.29 at 3.8e25 FLOPs: ≈10.5T tokens, ≈605B params."""
    p = predict(PowerLaw(alpha=0.53, A=0.29), 3.8e25)
    assert p["tokens"] == pytest.approx(10.46e12, rel=0.01)
    assert p["params"] == pytest.approx(605e9, rel=0.01)


def test_fewer_than_three_sizes_is_an_error() -> None:
    with pytest.raises(FitError, match="at least 3"):
        fit_budget(1e12, [1e6, 2e6], [3.0, 2.9])
    # Three runs but only two distinct token counts is still two sizes.
    with pytest.raises(FitError, match="2 model size"):
        fit_budget(1e12, [1e6, 2e6, 2e6], [3.0, 2.9, 2.91])


def test_downward_parabola_is_clamped_and_warned() -> None:
    tokens = [1e6, 2e6, 4e6, 8e6]
    losses = [3.0, 3.2, 3.25, 3.1]  # concave: no minimum
    o = fit_budget(1e12, tokens, losses)
    assert o.coeffs[0] < 0
    assert o.clamped and o.warning and "opens downwards" in o.warning
    assert o.optimal_tokens == pytest.approx(1e6)  # the lower-loss end of the range


def test_minimum_outside_range_is_clamped_and_warned() -> None:
    tokens = [1e6, 2e6, 4e6, 8e6]
    x = np.log(tokens)
    losses = list(3.0 + 0.1 * (x - math.log(5e7)) ** 2)  # vertex far beyond the largest run
    o = fit_budget(1e12, tokens, losses)
    assert o.clamped and o.warning and "outside the sampled range" in o.warning
    assert o.optimal_tokens == pytest.approx(8e6)
    fit = fit_isoflop([(1e12, t, v) for t, v in zip(tokens, losses, strict=True)]
                      + [(2e12, t, v) for t, v in zip(tokens, losses, strict=True)])
    assert any("outside the sampled range" in w for w in fit.warnings)


def test_power_law_needs_two_budgets_and_positive_values() -> None:
    with pytest.raises(FitError, match="2 distinct budgets"):
        fit_power_law([1e12], [1e6])
    with pytest.raises(FitError, match="positive"):
        fit_power_law([1e12, 2e12], [1e6, -1.0])
    with pytest.raises(FitError, match="no runs"):
        fit_isoflop([])
