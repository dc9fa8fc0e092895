"""A scaling sweep's `forecast`: one choice eval per run feeding the fit, checked names, and
`herd compile` reading a fitted forecast back for the stage that uses the law."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from compiler import compile_file
from herdlang.cli import main
from herdlang.diagnostics import HerdError

ROOT = Path(__file__).resolve().parents[2]
SWEEP = ROOT / "specs" / "scaling_tiny.herd"


def test_forecast_adds_one_choice_eval_per_run_and_feeds_the_fit() -> None:
    _, plan = compile_file(SWEEP)
    fit = plan.jobs["scaling.iso.fit"]
    assert fit.config["forecast"] == "choice"
    runs = fit.config["runs"]
    assert len(runs) == 15  # 3 budgets x 5 sizes
    for run in runs:
        job = plan.jobs[fit.inputs[run["task_input"]]]
        assert job.kind == "eval.choice"
        label = run["task_input"].split(":", 1)[1].replace(":", ".")
        assert job.inputs["checkpoint"] == f"scaling.iso.{label}"


def test_without_forecast_the_sweep_has_no_choice_jobs(tmp_path: Path) -> None:
    path = tmp_path / "s.herd"
    path.write_text(SWEEP.read_text().replace("  forecast  = choice", "  # no forecast"))
    _, plan = compile_file(path)
    assert "forecast" not in plan.jobs["scaling.iso.fit"].config
    assert not [j for j in plan.jobs.values() if j.kind == "eval.choice" and j.stage == "iso"]


@pytest.mark.parametrize(("value", "code", "message"), [
    ("perplexity", "H0407", "reports accuracy and the answer's NLL"),
    ("choise", "H0404", "not a known eval"),
])
def test_forecast_must_name_an_accuracy_eval(tmp_path: Path, value: str, code: str, message: str) -> None:
    path = tmp_path / "s.herd"
    path.write_text(SWEEP.read_text().replace("forecast  = choice", f"forecast  = {value}"))
    with pytest.raises(HerdError) as exc:
        compile_file(path)
    hits = [d for d in exc.value.diagnostics if d.code == code]
    assert hits and message in hits[0].message, [d.message for d in exc.value.diagnostics]


def test_compile_reports_the_fitted_forecast_for_the_law_stage(tmp_path: Path) -> None:
    _, plan = compile_file(SWEEP)
    store = tmp_path / plan.spec_name / "store" / plan.jobs["scaling.iso.fit"].fingerprint
    store.mkdir(parents=True)
    forecast = {"eval": "choice", "step1": {"B": 300.0, "beta": -0.16},
                "step2": {"k": 1.0, "midpoint": 2.5, "chance": 0.25}}
    (store / "law.json").write_text(json.dumps({"alpha": 0.9, "A": 4.5e-5, "forecast": forecast}))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["compile", str(SWEEP), "--format", "json", "--runs-dir", str(tmp_path)]) == 0
    base = json.loads(out.getvalue())["stages"]["base"]
    nll = 300.0 * base["flops"] ** -0.16
    assert base["forecast"]["nll"] == pytest.approx(nll)
    assert base["forecast"]["accuracy"] == pytest.approx(0.25 + 0.75 / (1 + 2.718281828459045 ** (-(2.5 - nll))))
    assert base["compute_optimal_params"] > 0


def test_a_law_the_sweep_could_not_determine_is_not_reported_as_fact(tmp_path: Path) -> None:
    """When every budget's optimum sat at the edge of the sweep's sizes, law.json says
    `determined: false`: compile shows why instead of a compute-optimal size and forecast."""
    _, plan = compile_file(SWEEP)
    store = tmp_path / plan.spec_name / "store" / plan.jobs["scaling.iso.fit"].fingerprint
    store.mkdir(parents=True)
    (store / "law.json").write_text(json.dumps({"alpha": 1.01, "A": 0.02, "determined": False}))
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["compile", str(SWEEP), "--format", "json", "--runs-dir", str(tmp_path)]) == 0
    base = json.loads(out.getvalue())["stages"]["base"]
    assert "compute_optimal_params" not in base and "forecast" not in base
    assert base["law_status"].startswith("not determined") and "hint:" in base["law_status"]
