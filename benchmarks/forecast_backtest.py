"""Backtest the accuracy forecast of a fitted sweep: refit on every budget but the largest,
forecast that budget, and compare with what its runs measured.

    herd run specs/scaling_tiny.herd && python benchmarks/forecast_backtest.py

Reads the sweep's `law.json` from the run store (found through runs/<spec>/index.json);
prints forecast vs observed and writes benchmarks/results/forecast_backtest-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import write_result  # noqa: E402
from runtime.scaling.forecast import forecast_accuracy  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=ROOT / "runs" / "scaling_tiny")
    ap.add_argument("--fit-job", default="scaling.iso.fit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    try:
        index = json.loads((args.run_dir / "index.json").read_text())
        fingerprint = index["jobs"][args.fit_job]["fingerprint"]
        law = json.loads((args.run_dir / "store" / fingerprint / "law.json").read_text())
        forecast = law["forecast"]
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: no fitted forecast under {args.run_dir} ({exc}); run the sweep first",
              file=sys.stderr)
        return 1
    rows = [(r["budget"], r["tokens"], p["nll"], p["accuracy"])
            for r, p in zip(law["runs"], forecast["step2"]["points"], strict=True)]
    optima = [(o["budget"], o["optimal_tokens"]) for o in law["budgets"]]
    held_out = max(b for b, _ in optima)
    fit = forecast_accuracy([o for o in optima if o[0] < held_out],
                            [r for r in rows if r[0] < held_out], forecast["step2"]["chance"], held_out)
    observed = sorted(((r[2], r[3]) for r in rows if r[0] == held_out), key=lambda p: -p[1])
    observed_nll = next(p["nll"] for p in forecast["step1"]["points"] if p["budget"] == held_out)
    result = {"held_out_budget": held_out, "forecast_nll": fit.target_nll,
              "forecast_accuracy": fit.target_accuracy, "observed_optimal_nll": observed_nll,
              "observed_best_accuracy": observed[0][1],
              "observed_runs": [{"nll": n, "accuracy": a} for n, a in observed]}
    print(f"held out C = {held_out:.3g}: forecast NLL {fit.target_nll:.3f} (observed optimum "
          f"{observed_nll:.3f}), forecast accuracy {fit.target_accuracy:.1%} (observed best run "
          f"{observed[0][1]:.1%}; runs {', '.join(f'{a:.1%}' for _, a in observed)})")
    write_result("forecast_backtest", result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
