"""Fit a compute-optimal scaling law from an IsoFLOP sweep, the way the Llama 3 paper does.

The sweep trains several model sizes at each compute budget C (tokens = C / (6·params)).
Two steps turn its validation losses into a law:

1. Per budget, a parabola of loss against ln(tokens). Its vertex is the compute-optimal
   number of training tokens N*(C) for that budget; the matching size is C / (6·N*).
   A parabola is the paper's choice because the IsoFLOP curves are close to symmetric in
   log space near their minimum, and three points are enough to place one.
2. Across budgets, a straight line ln N*(C) = ln A + α·ln C by least squares, i.e. the power
   law N*(C) = A·C^α, which extrapolates to the flagship budget.

Everything here is pure numpy so it can be tested on synthetic losses from a known law.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Training FLOPs per parameter per token (forward + backward), as in C = 6·N·D.
FLOPS_PER_PARAM_TOKEN = 6.0

#: The fewest sizes per budget a parabola is fitted through: with two it is not determined.
MIN_SIZES = 3


class FitError(ValueError):
    """The sweep cannot be fitted (too few sizes or budgets, bad values); a user-facing message."""


@dataclass
class BudgetOptimum:
    """The fitted IsoFLOP parabola of one budget and the compute-optimal point it gives."""

    budget: float
    tokens: list[float]
    losses: list[float]
    coeffs: tuple[float, float, float]  # loss = a·x² + b·x + c with x = ln(tokens)
    optimal_tokens: float
    optimal_params: float
    optimal_loss: float
    clamped: bool = False
    warning: str | None = None

    def curve(self, x: Any) -> Any:
        """The parabola's loss at x = ln(tokens) (scalar or array)."""
        a, b, c = self.coeffs
        return a * np.asarray(x) ** 2 + b * np.asarray(x) + c

    @property
    def residuals(self) -> list[float]:
        """Observed minus fitted loss per run: how well a parabola describes this budget."""
        fitted = self.curve(np.log(np.asarray(self.tokens, dtype=float)))
        return [float(v) for v in np.asarray(self.losses, dtype=float) - fitted]

    def to_json(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "optimal_tokens": self.optimal_tokens,
            "optimal_params": self.optimal_params,
            "optimal_loss": self.optimal_loss,
            "parabola": {"a": self.coeffs[0], "b": self.coeffs[1], "c": self.coeffs[2],
                         "x": "ln(tokens)"},
            "clamped": self.clamped,
            "warning": self.warning,
            "runs": [{"tokens": t, "loss": v, "residual": r}
                     for t, v, r in zip(self.tokens, self.losses, self.residuals, strict=True)],
        }


@dataclass
class PowerLaw:
    """N*(C) = A·C^α, fitted in log space; residuals are ln(observed) − ln(fitted) per budget."""

    alpha: float
    A: float
    residuals: list[float] = field(default_factory=list)

    def tokens(self, budget: float) -> float:
        """Compute-optimal training tokens for a budget of `budget` FLOPs."""
        return float(self.A * budget**self.alpha)

    def params(self, budget: float) -> float:
        """Compute-optimal parameters: the budget spent on the optimal tokens, C / (6·N*)."""
        return float(budget / (FLOPS_PER_PARAM_TOKEN * self.tokens(budget)))


@dataclass
class ScalingFit:
    """The whole fit: one optimum per budget, the law across them, and any warnings."""

    optima: list[BudgetOptimum]
    law: PowerLaw
    warnings: list[str]

    @property
    def determined(self) -> bool:
        """Did at least one budget find its optimum inside its sampled sizes? When every
        optimum is clamped, α and A only describe the edges of the sweep's grid."""
        return any(not o.clamped for o in self.optima)


def _finite_positive(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=float)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise FitError(f"{what} must be finite and positive, got {arr.tolist()}")
    return arr


def fit_budget(budget: float, tokens: Sequence[float], losses: Sequence[float]) -> BudgetOptimum:
    """Fit one budget's parabola of loss in ln(tokens) and locate its minimum.

    The optimum is only trusted inside the sampled range: a parabola that opens downwards
    has no minimum, and a vertex outside the range is an extrapolation the sweep does not
    support. Both are clamped to the sampled range (the end with the lower fitted loss, or
    the nearer end) and carry a warning, so the user learns the grid should be widened
    instead of getting a silently wrong law.
    """
    if len(tokens) != len(losses):
        raise FitError(f"budget {budget:.3g}: {len(tokens)} token counts but {len(losses)} losses")
    t = _finite_positive(tokens, f"budget {budget:.3g}: token counts")
    y = np.asarray(list(losses), dtype=float)
    if not np.all(np.isfinite(y)):
        raise FitError(f"budget {budget:.3g}: losses must be finite, got {y.tolist()}")
    distinct = len(np.unique(t))
    if distinct < MIN_SIZES:
        raise FitError(
            f"budget {budget:.3g} has {distinct} model size(s); an IsoFLOP parabola needs at "
            f"least {MIN_SIZES} — add sizes to the sweep for this budget")
    order = np.argsort(t)
    t, y = t[order], y[order]
    x = np.log(t)
    a, b, c = (float(v) for v in np.polyfit(x, y, 2))
    lo, hi = float(x[0]), float(x[-1])
    warning = None
    clamped = False
    if a <= 0:
        # No minimum: the best the sampled range offers is one of its ends.
        x_opt = lo if a * lo * lo + b * lo <= a * hi * hi + b * hi else hi
        clamped = True
        warning = (f"budget {budget:.3g}: the loss parabola opens downwards (a = {a:.3g}), so it "
                   f"has no minimum; using the sampled end at {math.exp(x_opt):.3g} tokens")
    else:
        x_opt = -b / (2 * a)
        if not lo <= x_opt <= hi:
            vertex = math.exp(x_opt)
            x_opt = lo if x_opt < lo else hi
            clamped = True
            warning = (f"budget {budget:.3g}: the parabola's minimum ({vertex:.3g} tokens) lies "
                       f"outside the sampled range [{t[0]:.3g}, {t[-1]:.3g}]; clamped to "
                       f"{math.exp(x_opt):.3g} — widen the sweep's sizes for this budget")
    opt_tokens = math.exp(x_opt)
    return BudgetOptimum(
        budget=float(budget),
        tokens=[float(v) for v in t],
        losses=[float(v) for v in y],
        coeffs=(a, b, c),
        optimal_tokens=opt_tokens,
        optimal_params=float(budget) / (FLOPS_PER_PARAM_TOKEN * opt_tokens),
        optimal_loss=float(a * x_opt * x_opt + b * x_opt + c),
        clamped=clamped,
        warning=warning,
    )


def fit_power_law(budgets: Sequence[float], optimal_tokens: Sequence[float]) -> PowerLaw:
    """Least-squares line through (ln C, ln N*): slope α, intercept ln A."""
    c = _finite_positive(budgets, "budgets")
    n = _finite_positive(optimal_tokens, "optimal token counts")
    if len(c) != len(n):
        raise FitError(f"{len(c)} budgets but {len(n)} optimal token counts")
    if len(np.unique(c)) < 2:
        raise FitError(f"a power law needs at least 2 distinct budgets, got {len(np.unique(c))}")
    lc, ln_ = np.log(c), np.log(n)
    alpha, log_a = (float(v) for v in np.polyfit(lc, ln_, 1))
    residuals = [float(v) for v in ln_ - (log_a + alpha * lc)]
    return PowerLaw(alpha=alpha, A=math.exp(log_a), residuals=residuals)


def fit_isoflop(runs: Iterable[tuple[float, float, float]]) -> ScalingFit:
    """Fit a sweep given as (budget, tokens, loss) triples: parabolas, then the power law."""
    by_budget: dict[float, list[tuple[float, float]]] = {}
    for budget, tokens, loss in runs:
        by_budget.setdefault(float(budget), []).append((float(tokens), float(loss)))
    if not by_budget:
        raise FitError("the sweep has no runs to fit")
    optima = []
    for budget in sorted(by_budget):
        pts = by_budget[budget]
        optima.append(fit_budget(budget, [p[0] for p in pts], [p[1] for p in pts]))
    law = fit_power_law([o.budget for o in optima], [o.optimal_tokens for o in optima])
    warnings = [o.warning for o in optima if o.warning]
    if all(o.clamped for o in optima):
        warnings.insert(0, "every budget's optimum is clamped to the edge of its sampled sizes, so "
                        "the law (and its prediction) describes the sweep's grid, not a compute-"
                        "optimal size: do not use it; widen the sizes (or raise the budgets) until "
                        "each budget's loss has a minimum between its smallest and largest model")
    if len(optima) == 2:
        warnings.append("only 2 budgets: the power law passes through both exactly, so its "
                        "residuals say nothing about how well it fits; add a third budget")
    return ScalingFit(optima=optima, law=law, warnings=warnings)


def predict(law: PowerLaw, budget: float) -> dict[str, float]:
    """Compute-optimal tokens and parameters the law gives for `budget` FLOPs."""
    return {"budget": float(budget), "tokens": law.tokens(budget), "params": law.params(budget)}
