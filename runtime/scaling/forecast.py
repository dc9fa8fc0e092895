"""Forecast a downstream eval's accuracy at the target budget — the Llama 3 paper's second
step after the compute-optimal law (its ARC Challenge forecast, section 3.2.1).

Accuracy does not scale smoothly with compute, but the likelihood of the right answer does,
and accuracy is a sigmoid of that likelihood. So two fits chain:

1. NLL of the correct answer (per token) at each budget's compute-optimal point against
   the budget: a power law NLL*(C) = B·C^β (a line in log-log space, which stays positive
   when extrapolated). The optimum's NLL comes from a parabola in ln(tokens) through the
   budget's runs, read at the optimal token count the loss fit found.
2. Accuracy against NLL over every run of the sweep: a sigmoid falling from 1 (NLL → 0) to
   chance (NLL → ∞), acc = chance + (1 − chance)·σ(k·(m − NLL)).

The target budget's NLL from (1), pushed through (2), is the forecast. Pure numpy, like
`fit.py`, so it is tested on data generated from known curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.scaling.fit import FitError


@dataclass
class Sigmoid:
    """acc = chance + (1 − chance)·σ(k·(midpoint − nll)); k > 0: accuracy falls as NLL grows."""

    k: float
    midpoint: float
    chance: float

    def __call__(self, nll: Any) -> Any:
        z = self.k * (self.midpoint - np.asarray(nll, dtype=float))
        return self.chance + (1.0 - self.chance) / (1.0 + np.exp(-z))


@dataclass
class AccuracyForecast:
    """Both fits, the points they went through, and the forecast at `target`."""

    budgets: list[float]
    optimal_nll: list[float]
    nll_B: float
    nll_beta: float
    sigmoid: Sigmoid
    runs: list[tuple[float, float]]  # (nll, accuracy) of every sweep run
    target: float
    target_nll: float
    target_accuracy: float
    warnings: list[str] = field(default_factory=list)

    def nll_at(self, budget: Any) -> Any:
        return self.nll_B * np.asarray(budget, dtype=float) ** self.nll_beta

    def to_json(self) -> dict[str, Any]:
        return {
            "step1": {"form": "NLL*(C) = B * C^beta", "B": self.nll_B, "beta": self.nll_beta,
                      "points": [{"budget": c, "nll": v}
                                 for c, v in zip(self.budgets, self.optimal_nll, strict=True)]},
            "step2": {"form": "acc = chance + (1 - chance) * sigmoid(k * (midpoint - nll))",
                      "k": self.sigmoid.k, "midpoint": self.sigmoid.midpoint,
                      "chance": self.sigmoid.chance,
                      "points": [{"nll": n, "accuracy": a} for n, a in self.runs],
                      "rmse": self.rmse},
            "target": self.target, "target_nll": self.target_nll,
            "target_accuracy": self.target_accuracy, "warnings": self.warnings,
        }

    @property
    def rmse(self) -> float:
        nll, acc = (np.array(v) for v in zip(*self.runs, strict=True))
        return float(np.sqrt(np.mean((self.sigmoid(nll) - acc) ** 2)))


def nll_at_optimum(tokens: Sequence[float], nlls: Sequence[float], optimal_tokens: float) -> float:
    """One budget's NLL at its compute-optimal token count: a parabola in ln(tokens) (a line
    with two runs) read at the optimum, which the loss fit keeps inside the sampled range."""
    x, y = np.log(np.asarray(tokens, dtype=float)), np.asarray(nlls, dtype=float)
    degree = min(2, len(np.unique(x)) - 1)
    if degree < 1:
        raise FitError("an optimum's NLL needs runs of at least 2 sizes in the budget")
    return float(np.polyval(np.polyfit(x, y, degree), math.log(optimal_tokens)))


def fit_nll_law(budgets: Sequence[float], nlls: Sequence[float]) -> tuple[float, float]:
    """(B, β) of NLL*(C) = B·C^β by least squares in log-log space."""
    c, v = np.asarray(budgets, dtype=float), np.asarray(nlls, dtype=float)
    if len(np.unique(c)) < 2:
        raise FitError("the NLL-vs-compute fit needs at least 2 budgets")
    if np.any(v <= 0) or not np.all(np.isfinite(v)):
        raise FitError(f"compute-optimal NLLs must be finite and positive, got {v.tolist()}")
    beta, log_b = (float(t) for t in np.polyfit(np.log(c), np.log(v), 1))
    return math.exp(log_b), beta


def fit_sigmoid(nll: Sequence[float], accuracy: Sequence[float], chance: float) -> Sigmoid:
    """Least-squares (k, midpoint) of the accuracy sigmoid: a coarse grid, then grids shrunk
    around the best point — deterministic, no optimiser dependency, and two parameters only."""
    x, y = np.asarray(nll, dtype=float), np.asarray(accuracy, dtype=float)
    if len(x) < 3:
        raise FitError(f"the accuracy sigmoid needs at least 3 runs, got {len(x)}")
    if not 0 <= chance < 1:
        raise FitError(f"chance accuracy must be in [0, 1), got {chance}")
    spread = max(float(np.ptp(x)), 1e-3)

    def sse(k: np.ndarray, m: np.ndarray) -> np.ndarray:
        z = k[..., None] * (m[..., None] - x)
        pred = chance + (1 - chance) / (1 + np.exp(-np.clip(z, -60, 60)))
        return ((pred - y) ** 2).sum(-1)

    log_k = np.linspace(math.log(0.05 / spread), math.log(200 / spread), 80)
    mids = np.linspace(x.min() - 3 * spread, x.max() + 3 * spread, 121)
    best = (0.0, 0.0)
    for _ in range(6):
        kk, mm = np.meshgrid(np.exp(log_k), mids, indexing="ij")
        err = sse(kk, mm)
        i, j = np.unravel_index(int(np.argmin(err)), err.shape)
        best = (float(log_k[i]), float(mids[j]))
        step_k, step_m = (log_k[1] - log_k[0]) * 4, (mids[1] - mids[0]) * 4
        log_k = np.linspace(best[0] - step_k, best[0] + step_k, 41)
        mids = np.linspace(best[1] - step_m, best[1] + step_m, 41)
    return Sigmoid(k=math.exp(best[0]), midpoint=best[1], chance=chance)


def forecast_accuracy(optima: Sequence[tuple[float, float]],
                      runs: Sequence[tuple[float, float, float, float]],
                      chance: float, target: float) -> AccuracyForecast:
    """`optima`: (budget, optimal tokens) from the loss fit; `runs`: (budget, tokens, nll,
    accuracy) for every sweep run. Returns both fits and the accuracy forecast at `target`."""
    by_budget: dict[float, list[tuple[float, float]]] = {}
    for budget, tokens, nll, _ in runs:
        by_budget.setdefault(float(budget), []).append((float(tokens), float(nll)))
    budgets, opt_nll = [], []
    for budget, opt_tokens in optima:
        pts = by_budget.get(float(budget), [])
        if not pts:
            raise FitError(f"budget {budget:.3g} has no downstream eval results")
        budgets.append(float(budget))
        opt_nll.append(nll_at_optimum([p[0] for p in pts], [p[1] for p in pts], opt_tokens))
    b, beta = fit_nll_law(budgets, opt_nll)
    sig = fit_sigmoid([r[2] for r in runs], [r[3] for r in runs], chance)
    target_nll = float(b * target**beta)
    warnings = []
    if beta >= 0:
        warnings.append(f"the compute-optimal NLL does not fall with compute (beta = {beta:.3g}): "
                        "the forecast extrapolates no improvement")
    if len(budgets) == 2:
        warnings.append("only 2 budgets: the NLL-vs-compute line passes through both exactly, so "
                        "nothing checks the extrapolation to the target; add a third budget")
    accs = [r[3] for r in runs]
    if max(accs) - min(accs) < 0.05:
        warnings.append("accuracy barely varies across the sweep: the sigmoid is poorly "
                        "determined; use more items or a wider range of budgets")
    return AccuracyForecast(
        budgets=budgets, optimal_nll=opt_nll, nll_B=b, nll_beta=beta, sigmoid=sig,
        runs=[(float(r[2]), float(r[3])) for r in runs], target=float(target),
        target_nll=target_nll, target_accuracy=float(sig(target_nll)), warnings=warnings)
