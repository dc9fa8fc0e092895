"""Scaling-law fitting (IsoFLOP parabolas and the N*(C) = A·C^α power law), numpy only.

Kept free of torch so the fit can be tested, and reused by the compiler or notebooks,
without loading the training stack.
"""

from runtime.scaling.fit import (
    BudgetOptimum,
    FitError,
    PowerLaw,
    ScalingFit,
    fit_budget,
    fit_isoflop,
    fit_power_law,
    predict,
)

__all__ = [
    "BudgetOptimum",
    "FitError",
    "PowerLaw",
    "ScalingFit",
    "fit_budget",
    "fit_isoflop",
    "fit_power_law",
    "predict",
]
