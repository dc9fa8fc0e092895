"""Jobs that turn sweeps and probes into evidence: `scaling.fit` and `probe.compare`.

`scaling.fit` reads the validation loss of every (budget, size) run of an IsoFLOP sweep
and fits the compute-optimal law (see `runtime.scaling.fit`); `probe.compare` sets a
candidate-data anneal against its control and says whether the new data helped. Both only
read upstream `eval.json` files, so they run in well under a second and never need torch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.scaling.fit import FitError, ScalingFit, fit_isoflop, predict
from runtime.scaling.forecast import AccuracyForecast, forecast_accuracy

#: A mean loss change smaller than this (nats) is called neutral: tiny anneals are noisy.
DEFAULT_THRESHOLD = 0.01


def _read_eval(ctx: JobContext, role: str) -> dict[str, Any]:
    """The `eval.json` of input `role`, or a JobFailed that names what is missing."""
    if role not in ctx.inputs:
        raise JobFailed(f"{ctx.job_id}: no input {role!r} (have: {', '.join(sorted(ctx.inputs))})")
    path = Path(ctx.inputs[role]) / "eval.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JobFailed(f"{ctx.job_id}: input {role!r} has no eval.json ({path})") from None
    except json.JSONDecodeError as exc:
        raise JobFailed(f"{ctx.job_id}: input {role!r}: eval.json is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise JobFailed(f"{ctx.job_id}: input {role!r}: eval.json is not an object")
    return data


def _source_losses(ctx: JobContext, role: str, data: dict[str, Any]) -> dict[str, float]:
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise JobFailed(f"{ctx.job_id}: input {role!r}: eval.json has no per-source losses")
    try:
        return {name: float(r["loss"]) for name, r in sources.items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise JobFailed(f"{ctx.job_id}: input {role!r}: a source has no numeric loss") from exc


def _fmt(n: float) -> str:
    """Human-scale count: 1.65M, 10.5T."""
    for div, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}"
    return f"{n:.3g}"


# ----------------------------------------------------------------------------------------
# scaling.fit


@register("scaling.fit")
def scaling_fit(ctx: JobContext) -> None:
    """Fit IsoFLOP parabolas per budget and the N*(C) = A·C^α law across budgets."""
    runs = ctx.config.get("runs") or []
    if not runs:
        raise JobFailed(f"{ctx.job_id}: the sweep has no runs (config.runs is empty)")
    target = ctx.config.get("target")
    ctx.progress.start(len(runs) + 1, "runs")
    rows = []
    for run in runs:
        data = _read_eval(ctx, run["input"])
        losses = _source_losses(ctx, run["input"], data)
        rows.append({**run, "loss": float(np.mean(list(losses.values()))), "sources": losses})
        ctx.progress.advance(1)
    try:
        fit = fit_isoflop((r["budget"], r["tokens"], r["loss"]) for r in rows)
    except FitError as exc:
        raise JobFailed(f"{ctx.job_id}: {exc}") from exc
    for w in fit.warnings:
        ctx.log.warning(w)
    prediction = predict(fit.law, float(target)) if target else None
    law = {
        "alpha": fit.law.alpha,
        "A": fit.law.A,
        "form": "N*(C) = A * C^alpha (optimal training tokens); params = C / (6 N*)",
        "budgets": [o.to_json() for o in fit.optima],
        "residuals": {"power_law_ln": fit.law.residuals,
                      "parabola_loss": [r for o in fit.optima for r in o.residuals]},
        "prediction": prediction,
        "runs": [{k: r[k] for k in ("input", "budget", "model", "params", "tokens", "loss")}
                 for r in rows],
        "warnings": fit.warnings,
        "determined": fit.determined,
    }
    out = Path(ctx.out)
    forecast = _forecast(ctx, fit, runs, float(target or 10 * max(r["budget"] for r in runs)))
    if forecast:
        law["forecast"] = {"eval": ctx.config["forecast"], **forecast.to_json()}
        for w in forecast.warnings:
            ctx.log.warning(w)
    write_json(out / "law.json", law)
    stats: dict[str, Any] = {"alpha": round(fit.law.alpha, 4), "A": float(f"{fit.law.A:.4g}"),
                             "budgets": len(fit.optima), "runs": len(rows),
                             "warnings": len(fit.warnings), "determined": fit.determined}
    if prediction:
        stats["target"] = prediction["budget"]
        stats["optimal_tokens"] = round(prediction["tokens"])
        stats["optimal_params"] = round(prediction["params"])
    if forecast:
        stats["forecast_accuracy"] = round(forecast.target_accuracy, 4)
    write_json(out / "stats.json", stats)
    _isoflop_figure(out / "isoflop.png", fit, prediction)
    lines = _fit_report(fit, rows, prediction)
    if forecast:
        _forecast_figure(out / "forecast.png", forecast)
        lines += _forecast_report(ctx.config["forecast"], forecast)
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx.metric(alpha=fit.law.alpha, A=fit.law.A)
    ctx.progress.advance(1)


def _forecast(ctx: JobContext, fit: ScalingFit, runs: list[dict[str, Any]],
              target: float) -> AccuracyForecast | None:
    """The paper's accuracy forecast, when the sweep names a `forecast` eval."""
    if not ctx.config.get("forecast"):
        return None
    points, chance = [], None
    for run in runs:
        role = run.get("task_input")
        if not role:
            raise JobFailed(f"{ctx.job_id}: run {run['input']} has no downstream eval input")
        data = _read_eval(ctx, role)
        try:
            points.append((float(run["budget"]), float(run["tokens"]), float(data["nll"]),
                           float(data["accuracy"])))
            chance = float(data["chance"])
        except (KeyError, TypeError, ValueError):
            raise JobFailed(f"{ctx.job_id}: input {role!r}: eval.json lacks accuracy, nll or "
                            "chance (the forecast needs a choice eval)") from None
    try:
        forecast = forecast_accuracy([(o.budget, o.optimal_tokens) for o in fit.optima], points,
                                     chance or 0.0, target)
    except FitError as exc:
        raise JobFailed(f"{ctx.job_id}: forecast: {exc}") from exc
    if not fit.determined:  # step 1 reads each budget's NLL at an optimum that is only a grid edge
        forecast.warnings.insert(0, "every budget's optimum is clamped to the edge of its sizes, "
                                 "so the compute-optimal NLLs are not optima and the forecast is "
                                 "not supported; widen the sweep's sizes")
    return forecast


def _forecast_report(name: str, f: AccuracyForecast) -> list[str]:
    s = f.sigmoid
    lines = ["### Accuracy forecast", "",
             f"Downstream eval `{name}`, the paper's two steps: the compute-optimal NLL of the "
             f"correct answer follows **NLL\\*(C) = {f.nll_B:.4g}·C^{f.nll_beta:.4f}**; accuracy "
             f"follows the NLL as a sigmoid (k = {s.k:.3g}, midpoint {s.midpoint:.3f}, chance "
             f"{s.chance:.0%}; RMSE {f.rmse:.3f} over {len(f.runs)} runs).", "",
             f"At C = {f.target:.3g} FLOPs: NLL {f.target_nll:.4f} → **forecast accuracy "
             f"{f.target_accuracy:.1%}** (best sweep run: {max(a for _, a in f.runs):.1%}).", ""]
    if f.warnings:
        lines += ["**Warnings:**", ""] + [f"- {w}" for w in f.warnings] + [""]
    lines += ["![Accuracy forecast](forecast.png)", "",
              "| budget (FLOPs) | NLL at the optimum |", "|---|---|"]
    lines += [f"| {c:.3g} | {v:.4f} |" for c, v in zip(f.budgets, f.optimal_nll, strict=True)]
    return lines + [""]


def _finish_axes(ax: Any, xlabel: str, ylabel: str, title: str, which: str = "major") -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which=which, alpha=0.25)
    ax.legend(fontsize=8)


def _save_figure(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=110, bbox_inches="tight")


def _forecast_figure(path: Path, f: AccuracyForecast) -> None:
    """Two panels like the paper's Figure 4: NLL vs compute, then accuracy vs NLL."""
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cs = np.logspace(math.log10(min(f.budgets)) - 0.1, math.log10(max(f.target, *f.budgets)) + 0.1, 50)
    left.scatter(f.budgets, f.optimal_nll, color="tab:blue", zorder=3, label="compute-optimal runs")
    left.plot(cs, f.nll_at(cs), color="black", linewidth=1.2,
              label=f"NLL* = {f.nll_B:.3g}·C^{f.nll_beta:.3f}")
    left.scatter([f.target], [f.target_nll], marker="*", s=180, color="crimson", zorder=4,
                 label=f"target {f.target:.2g}")
    left.set_xscale("log")
    _finish_axes(left, "compute budget C (FLOPs)", "NLL of the correct answer (nats/token)",
                 "Step 1: likelihood vs compute", which="both")
    nll = np.array([n for n, _ in f.runs])
    acc = np.array([a for _, a in f.runs])
    lo, hi = min(nll.min(), f.target_nll), nll.max()
    xs = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 100)
    right.scatter(nll, acc, color="tab:blue", zorder=3, label="sweep runs")
    right.plot(xs, f.sigmoid(xs), color="black", linewidth=1.2, label="fitted sigmoid")
    right.axhline(f.sigmoid.chance, color="gray", linestyle=":", label="chance")
    right.scatter([f.target_nll], [f.target_accuracy], marker="*", s=180, color="crimson", zorder=4,
                  label=f"forecast {f.target_accuracy:.1%}")
    _finish_axes(right, "NLL of the correct answer (nats/token)", "accuracy",
                 "Step 2: accuracy vs likelihood")
    _save_figure(fig, path)


def _fit_report(fit: ScalingFit, rows: list[dict[str, Any]],
                prediction: dict[str, float] | None) -> list[str]:
    law = fit.law
    lines = ["### Scaling law", ""]
    if not fit.determined:
        lines += ["**Not determined: every budget's optimum lies at the edge of its sampled "
                  "sizes, so the figures below follow the sweep's grid, not the data (see the "
                  "warnings).**", ""]
    lines += [
             f"N\\*(C) = A·C^α with **α = {law.alpha:.4f}**, **A = {law.A:.4g}** "
             f"(least squares in log space over {len(fit.optima)} budgets; "
             f"max |ln residual| = {max(abs(r) for r in law.residuals):.3g}).", ""]
    if prediction:
        lines += [f"At the target budget C = {prediction['budget']:.3g} FLOPs the law gives "
                  f"**{_fmt(prediction['tokens'])} tokens** and "
                  f"**{_fmt(prediction['params'])} parameters** (C / 6N\\*).", ""]
    if fit.warnings:
        lines += ["**Warnings:**", ""] + [f"- {w}" for w in fit.warnings] + [""]
    lines += ["![IsoFLOP curves and the fitted law](isoflop.png)", "",
              "### Per-budget optimum", "",
              "| budget (FLOPs) | optimal tokens | optimal params | loss at optimum | clamped |",
              "|---|---|---|---|---|"]
    lines += [f"| {o.budget:.3g} | {_fmt(o.optimal_tokens)} | {_fmt(o.optimal_params)} | "
              f"{o.optimal_loss:.4f} | {'yes' if o.clamped else 'no'} |" for o in fit.optima]
    lines += ["", "### Sweep runs", "",
              "| budget | model | params | tokens | mean val loss |", "|---|---|---|---|---|"]
    lines += [f"| {r['budget']:.3g} | {r.get('model', '')} | {_fmt(float(r.get('params', 0)))} | "
              f"{_fmt(float(r['tokens']))} | {r['loss']:.4f} |" for r in rows]
    return lines + [""]


def _isoflop_figure(path: Path, fit: ScalingFit, prediction: dict[str, float] | None) -> None:
    """The paper's two panels: IsoFLOP parabolas with minima, then N*(C) with the fitted line."""
    fig = Figure(figsize=(12, 4.5))
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    cmap = matplotlib.colormaps["viridis"]
    n = len(fit.optima)
    colors = [cmap(i / max(1, n - 1) * 0.85) for i in range(n)]
    for o, color in zip(fit.optima, colors, strict=True):
        x = np.log(o.tokens)
        pad = 0.15 * (x[-1] - x[0])
        xs = np.linspace(x[0] - pad, x[-1] + pad, 100)
        left.scatter(o.tokens, o.losses, color=color, s=22, zorder=3)
        left.plot(np.exp(xs), o.curve(xs), color=color, linewidth=1.4, label=f"{o.budget:.2g}")
        left.scatter([o.optimal_tokens], [o.optimal_loss], color=color, marker="*" if not
                     o.clamped else "X", s=140, edgecolor="black", linewidth=0.6, zorder=4)
    left.set_xscale("log")
    _finish_axes(left, "training tokens", "validation loss", "IsoFLOP curves (★ = compute-optimal)",
                 which="both")
    left.legend(title="FLOPs", fontsize=8)

    budgets = np.array([o.budget for o in fit.optima])
    optimal = np.array([o.optimal_tokens for o in fit.optima])
    right.scatter(budgets, optimal, color=colors, s=40, zorder=3, label="fitted minima")
    hi = max(budgets.max(), prediction["budget"] if prediction else 0.0)
    cs = np.logspace(math.log10(budgets.min()) - 0.1, math.log10(hi) + 0.1, 50)
    right.plot(cs, fit.law.A * cs**fit.law.alpha, color="black", linewidth=1.2,
               label=f"N* = {fit.law.A:.3g}·C^{fit.law.alpha:.3f}")
    if prediction:
        right.scatter([prediction["budget"]], [prediction["tokens"]], marker="*", s=180,
                      color="crimson", zorder=4,
                      label=f"target {prediction['budget']:.2g}: {_fmt(prediction['tokens'])} tok")
    right.set_xscale("log")
    right.set_yscale("log")
    _finish_axes(right, "compute budget C (FLOPs)", "compute-optimal tokens N*(C)", "Scaling law",
                 which="both")
    _save_figure(fig, path)


# ----------------------------------------------------------------------------------------
# probe.compare


def _compare_eval(ctx: JobContext, name: str, threshold: float) -> dict[str, Any]:
    """One eval's control vs candidate numbers and the verdict they support."""
    control = _read_eval(ctx, f"control:{name}")
    candidate = _read_eval(ctx, f"candidate:{name}")
    if "sources" in control or "sources" in candidate:
        c = _source_losses(ctx, f"control:{name}", control)
        d = _source_losses(ctx, f"candidate:{name}", candidate)
        missing = sorted(set(c) ^ set(d))
        if missing:
            raise JobFailed(f"{ctx.job_id}: {name}: control and candidate were evaluated on "
                            f"different sources ({', '.join(missing)})")
        rows = [{"metric": s, "control": c[s], "candidate": d[s], "delta": d[s] - c[s]}
                for s in sorted(c)]
        mean = float(np.mean([r["delta"] for r in rows]))
        lower_is_better = True
    else:
        # Task evals: compare the top-level numbers (accuracy and friends); higher is better.
        keys = sorted(k for k, v in control.items() if isinstance(v, int | float)
                      and not isinstance(v, bool) and isinstance(candidate.get(k), int | float)
                      and k not in {"count", "pairs", "correct", "context", "chance", "options",
                                    "continuation"})
        if not keys:
            raise JobFailed(f"{ctx.job_id}: {name}: no numeric results to compare")
        rows = [{"metric": k, "control": float(control[k]), "candidate": float(candidate[k]),
                 "delta": float(candidate[k]) - float(control[k])} for k in keys]
        main = "accuracy" if "accuracy" in keys else keys[0]
        mean = next(r["delta"] for r in rows if r["metric"] == main)
        lower_is_better = "loss" in main
    gain = -mean if lower_is_better else mean
    verdict = "helps" if gain > threshold else "hurts" if gain < -threshold else "neutral"
    return {"rows": rows, "mean_delta": mean, "lower_is_better": lower_is_better,
            "verdict": verdict}


@register("probe.compare")
def probe_compare(ctx: JobContext) -> None:
    """Candidate anneal (with the new data) vs control anneal: per-eval deltas and a verdict."""
    cfg = ctx.config
    evals = list(cfg.get("evals") or sorted({r.split(":", 1)[1] for r in ctx.inputs if ":" in r}))
    if not evals:
        raise JobFailed(f"{ctx.job_id}: no evals to compare")
    threshold = float(cfg.get("threshold", DEFAULT_THRESHOLD))
    new, share = cfg.get("new", "the candidate data"), cfg.get("share")
    share_txt = f"{float(share):.0%} " if share is not None else ""
    results = {name: _compare_eval(ctx, name, threshold) for name in evals}
    verdicts = {r["verdict"] for r in results.values()}
    overall = ("helps" if verdicts == {"helps"} or verdicts == {"helps", "neutral"}
               else "hurts" if "hurts" in verdicts and "helps" not in verdicts
               else "neutral" if verdicts == {"neutral"} else "mixed")
    out = Path(ctx.out)
    write_json(out / "compare.json", {"new": new, "share": share, "threshold": threshold,
                                       "verdict": overall, "evals": results})
    stats: dict[str, Any] = {"verdict": overall}
    stats.update({f"{n}_delta": round(r["mean_delta"], 4) for n, r in results.items()})
    write_json(out / "stats.json", stats)
    lines = ["### Data probe", "",
             f"**Verdict: {share_txt}{new} {overall}** "
             f"(|mean change| within {threshold:g} counts as neutral; "
             f"delta = candidate − control).", ""]
    for name, r in results.items():
        better = "lower" if r["lower_is_better"] else "higher"
        lines += [f"#### {name} — {r['verdict']} (mean delta {r['mean_delta']:+.4f}, "
                  f"{better} is better)", "",
                  "| source | control | candidate | delta |", "|---|---|---|---|"]
        lines += [f"| {row['metric']} | {row['control']:.4f} | {row['candidate']:.4f} | "
                  f"{row['delta']:+.4f} |" for row in r["rows"]]
        lines.append("")
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx.log.info("probe %s: %s", new, overall)
