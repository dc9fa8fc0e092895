"""scaling.fit and probe.compare run end to end on hand-written eval.json artifacts."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pytest

from runtime.jobs import registry
from runtime.jobs.context import JobContext, JobFailed
from runtime.jobs.scaling_jobs import probe_compare, scaling_fit

# The job functions are called directly: registry.get() would import every job module (and
# torch with them) just to find two functions that need neither.

SIZES = {"xs": 100_512, "s": 246_080, "m": 525_984, "l": 1_033_344}
BUDGETS = [1e12, 2e12, 4e12]
ALPHA, A = 0.5, 1.5  # the known law the fake sweep is built from


def make_ctx(tmp: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path]) -> JobContext:
    """The smallest JobContext a job function accepts, as the executor would build it."""
    out, work = tmp / "out", tmp / "work"
    out.mkdir(parents=True)
    work.mkdir(parents=True)
    return JobContext(job_id=kind, kind=kind, stage="iso", config=config, inputs=inputs,
                      out=out, work=work, run_dir=tmp, settings={"workers": 1},
                      log=logging.getLogger(f"test.{kind}"), metrics_path=tmp / "metrics.jsonl")


def write_eval(directory: Path, losses: dict[str, float]) -> Path:
    directory.mkdir(parents=True)
    sources = {s: {"loss": v, "perplexity": math.exp(v), "tokens": 4096} for s, v in losses.items()}
    (directory / "eval.json").write_text(json.dumps({"context": 128, "sources": sources}))
    return directory


def sweep(tmp: Path, budgets: list[float] = BUDGETS,
          sizes: dict[str, int] = SIZES) -> tuple[dict[str, Any], dict[str, Path]]:
    """A config shaped like `herd compile specs/scaling_tiny.herd` emits, and its eval inputs.

    Losses are parabolas in ln(tokens) around the known optimum; the two sources differ by a
    constant, so their mean has the same minimum."""
    runs, inputs = [], {}
    for c in budgets:
        centre = math.log(A * c**ALPHA)
        for model, params in sizes.items():
            tokens = c / (6 * params)
            role = f"run:{c:.0e}:{model}".replace("e+", "e")
            loss = 4.0 + 0.2 * (math.log(tokens) - centre) ** 2
            inputs[role] = write_eval(tmp / "evals" / role.replace(":", "_"),
                                      {"docs": loss - 0.1, "source": loss + 0.1})
            runs.append({"input": role, "budget": c, "model": model, "params": params,
                         "tokens": round(tokens)})
    return {"runs": runs, "target": 4e13}, inputs


def test_scaling_fit_job_writes_law_report_and_plot(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path)
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    law = json.loads((ctx.out / "law.json").read_text())
    assert law["alpha"] == pytest.approx(ALPHA, abs=0.02)
    assert law["A"] == pytest.approx(A, rel=0.10)
    assert len(law["budgets"]) == 3 and not law["warnings"]
    pred = law["prediction"]
    assert pred["budget"] == 4e13
    assert pred["tokens"] == pytest.approx(A * 4e13**ALPHA, rel=0.05)
    assert pred["params"] == pytest.approx(4e13 / (6 * pred["tokens"]))
    assert len(law["residuals"]["power_law_ln"]) == 3
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert stats["budgets"] == 3 and stats["runs"] == 12
    report = (ctx.out / "report.md").read_text()
    assert report.startswith("### ") and "](isoflop.png)" in report and "α =" in report
    assert (ctx.out / "isoflop.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_fit_warns_when_the_minimum_is_off_the_grid(tmp_path: Path) -> None:
    # Sizes all far too small for the budget: every minimum lies beyond the sampled tokens.
    config, inputs = sweep(tmp_path, sizes={"a": 2_000_000, "b": 4_000_000, "c": 8_000_000})
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    law = json.loads((ctx.out / "law.json").read_text())
    assert all(b["clamped"] for b in law["budgets"])
    assert "outside the sampled range" in (ctx.out / "report.md").read_text()


def test_a_law_from_optima_that_are_all_clamped_says_it_is_not_determined(tmp_path: Path) -> None:
    """When no budget has its minimum inside its sizes, each optimum is a grid edge: the line
    through them fits perfectly (here α comes out near 1: the same smallest size at every
    budget) yet describes the grid, not the data. The law says so at the top of the report."""
    config, inputs = sweep(tmp_path, sizes={"a": 2_000_000, "b": 4_000_000, "c": 8_000_000})
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    law = json.loads((ctx.out / "law.json").read_text())
    assert law["determined"] is False and "do not use it" in law["warnings"][0]
    assert json.loads((ctx.out / "stats.json").read_text())["determined"] is False
    report = (ctx.out / "report.md").read_text()
    assert report.index("Not determined") < report.index("α =")


def test_a_law_with_an_optimum_inside_the_sizes_is_determined(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path)
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    assert json.loads((ctx.out / "law.json").read_text())["determined"] is True
    assert "Not determined" not in (ctx.out / "report.md").read_text()


def test_scaling_fit_fails_clearly_with_two_sizes(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path, sizes={"xs": SIZES["xs"], "s": SIZES["s"]})
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    with pytest.raises(JobFailed, match="at least 3"):
        scaling_fit(ctx)


def test_scaling_fit_fails_clearly_on_a_missing_eval(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path)
    (inputs["run:1e12:xs"] / "eval.json").unlink()
    with pytest.raises(JobFailed, match="no eval.json"):
        scaling_fit(make_ctx(tmp_path, "scaling.fit", config, inputs))


def with_forecast(tmp: Path, config: dict[str, Any], inputs: dict[str, Path]) -> None:
    """Add a choice eval per run: the answer's NLL follows the run's loss (lower at the
    optimum, lower at larger budgets) and accuracy is a known sigmoid of that NLL."""
    for run in config["runs"]:
        loss = json.loads((inputs[run["input"]] / "eval.json").read_text())["sources"]["docs"]["loss"]
        nll = loss - 1e-12 * run["budget"] * 0.3
        accuracy = 0.25 + 0.75 / (1 + math.exp(-2.0 * (3.5 - nll)))
        role = run["input"].replace("run:", "task:")
        d = tmp / "tasks" / role.replace(":", "_")
        d.mkdir(parents=True)
        (d / "eval.json").write_text(json.dumps({"accuracy": accuracy, "nll": nll, "chance": 0.25,
                                                 "count": 300}))
        inputs[role] = d
        run["task_input"] = role
    config["forecast"] = "choice"


def test_scaling_fit_forecasts_downstream_accuracy(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path)
    with_forecast(tmp_path, config, inputs)
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    f = json.loads((ctx.out / "law.json").read_text())["forecast"]
    assert f["eval"] == "choice" and f["target"] == 4e13
    assert f["step2"]["k"] == pytest.approx(2.0, rel=0.01)
    assert f["step2"]["midpoint"] == pytest.approx(3.5, abs=0.01)
    assert f["step1"]["beta"] < 0  # the optimum's NLL falls with compute
    expected = 0.25 + 0.75 / (1 + math.exp(-2.0 * (3.5 - f["target_nll"])))
    assert f["target_accuracy"] == pytest.approx(expected, abs=1e-3)
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert stats["forecast_accuracy"] == pytest.approx(f["target_accuracy"], abs=1e-4)
    report = (ctx.out / "report.md").read_text()
    assert "### Accuracy forecast" in report and "](forecast.png)" in report
    assert (ctx.out / "forecast.png").read_bytes()[:4] == b"\x89PNG"


def test_a_forecast_from_two_budgets_or_clamped_optima_carries_warnings(tmp_path: Path) -> None:
    """Two budgets put the NLL line exactly through both points; clamped optima are not optima."""
    config, inputs = sweep(tmp_path, budgets=BUDGETS[:2],
                           sizes={"a": 2_000_000, "b": 4_000_000, "c": 8_000_000})
    with_forecast(tmp_path, config, inputs)
    ctx = make_ctx(tmp_path, "scaling.fit", config, inputs)
    scaling_fit(ctx)
    warnings = json.loads((ctx.out / "law.json").read_text())["forecast"]["warnings"]
    assert "forecast is not supported" in warnings[0]
    assert any("only 2 budgets" in w for w in warnings)


def test_scaling_fit_forecast_needs_choice_results(tmp_path: Path) -> None:
    config, inputs = sweep(tmp_path)
    with_forecast(tmp_path, config, inputs)
    (inputs["task:1e12:xs"] / "eval.json").write_text(json.dumps({"sources": {}}))
    with pytest.raises(JobFailed, match="lacks accuracy, nll or chance"):
        scaling_fit(make_ctx(tmp_path, "scaling.fit", config, inputs))


@pytest.mark.parametrize(("shift", "verdict"), [(-0.05, "helps"), (0.05, "hurts"),
                                                (0.004, "neutral")])
def test_probe_compare(tmp_path: Path, shift: float, verdict: str) -> None:
    control = write_eval(tmp_path / "control", {"docs": 3.0, "stdlib": 2.5})
    candidate = write_eval(tmp_path / "candidate", {"docs": 3.0 + 2 * shift, "stdlib": 2.5})
    ctx = make_ctx(tmp_path, "probe.compare", {"new": "docs", "share": 0.3, "evals": ["perplexity"]},
                   {"control:perplexity": control, "candidate:perplexity": candidate})
    probe_compare(ctx)
    result = json.loads((ctx.out / "compare.json").read_text())
    assert result["verdict"] == verdict
    rows = {r["metric"]: r for r in result["evals"]["perplexity"]["rows"]}
    assert rows["docs"]["delta"] == pytest.approx(2 * shift)
    assert rows["stdlib"]["delta"] == pytest.approx(0.0)
    report = (ctx.out / "report.md").read_text()
    assert f"30% docs {verdict}" in report and "| docs | 3.0000 |" in report


@pytest.mark.parametrize(("override", "verdict"), [(None, "helps"), ("more_docs.threshold=0.1", "neutral")])
def test_a_probe_calls_a_change_within_its_threshold_neutral(tmp_path: Path, override, verdict) -> None:
    from compiler import compile_file

    spec = Path(__file__).resolve().parents[2] / "specs" / "scaling_tiny.herd"
    _, plan = compile_file(spec, [override] if override else None)
    control = write_eval(tmp_path / "control", {"docs": 3.0, "stdlib": 2.5})
    candidate = write_eval(tmp_path / "candidate", {"docs": 2.9, "stdlib": 2.5})  # mean -0.05 nats
    ctx = make_ctx(tmp_path, "probe.compare", plan.jobs["probe.more_docs.compare"].config,
                   {"control:perplexity": control, "candidate:perplexity": candidate})
    probe_compare(ctx)
    result = json.loads((ctx.out / "compare.json").read_text())
    assert (result["verdict"], result["threshold"]) == (verdict, 0.1 if override else 0.01)


def test_probe_compare_fails_on_mismatched_sources(tmp_path: Path) -> None:
    control = write_eval(tmp_path / "control", {"docs": 3.0})
    candidate = write_eval(tmp_path / "candidate", {"stdlib": 2.5})
    ctx = make_ctx(tmp_path, "probe.compare", {"new": "docs", "evals": ["perplexity"]},
                   {"control:perplexity": control, "candidate:perplexity": candidate})
    with pytest.raises(JobFailed, match="different sources"):
        probe_compare(ctx)


def test_jobs_are_registered_under_the_compiled_kinds() -> None:
    assert registry._REGISTRY["scaling.fit"] is scaling_fit
    assert registry._REGISTRY["probe.compare"] is probe_compare
