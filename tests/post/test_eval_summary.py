"""eval.summary: the post-training table reads base → SFT → rejection sampling → DPO."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from runtime.jobs.context import JobContext, JobFailed
from runtime.jobs.summary_jobs import summary


def _artifact(root: Path, name: str, file: str, data: dict) -> Path:
    d = root / name
    d.mkdir()
    (d / file).write_text(json.dumps(data))
    return d


def _ctx(tmp_path: Path, inputs: dict[str, Path], config: dict | None = None) -> JobContext:
    out = tmp_path / "out"
    out.mkdir()
    return JobContext("eval.chat.summary", "eval.summary", "chat", config or {}, inputs, out, tmp_path / "work",
                      tmp_path, {}, logging.getLogger("test"))


def test_points_keep_their_order_and_measures(tmp_path: Path) -> None:
    inputs = {
        "00:base:tasks": _artifact(tmp_path, "a", "eval.json", {"accuracy": 0.1, "per_kind": {"add": 0.1}}),
        "01:r1 rejection sampling:rejection_sampling": _artifact(tmp_path, "b", "stats.json", {"acceptance_rate": 0.4}),
        "02:r1 sft:tasks": _artifact(tmp_path, "c", "eval.json", {"accuracy": 0.5}),
        "03:r1 dpo:tasks": _artifact(tmp_path, "d", "eval.json", {"accuracy": 0.6}),
    }
    ctx = _ctx(tmp_path, inputs)
    summary(ctx)
    rows = json.loads((ctx.out / "summary.json").read_text())
    assert [(r["point"], r["measure"], r["value"]) for r in rows] == [
        ("base", "accuracy", 0.1), ("r1 rejection sampling", "acceptance", 0.4),
        ("r1 sft", "accuracy", 0.5), ("r1 dpo", "accuracy", 0.6)]
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert stats["first_accuracy"] == 0.1 and stats["last_accuracy"] == 0.6
    report = (ctx.out / "report.md").read_text()
    assert "| r1 dpo | tasks | accuracy | 60.0% |" in report
    assert (ctx.out / "accuracy.png").stat().st_size > 1000


def test_reward_model_sampling_shows_sample_accuracy_not_its_constant_acceptance(tmp_path: Path) -> None:
    """Scored by a reward model, the best of k is always kept (acceptance 100%): the summary
    shows how many samples were right instead, or leaves the point out when none is checkable."""
    rm = {"acceptance_rate": 1.0, "scorer": "judge", "sample_accuracy": 0.3}
    unverifiable = {"acceptance_rate": 1.0, "scorer": "judge", "sample_accuracy": None}
    inputs = {
        "00:base:tasks": _artifact(tmp_path, "a", "eval.json", {"accuracy": 0.1}),
        "01:r1 rejection sampling:rejection_sampling": _artifact(tmp_path, "b", "stats.json", rm),
        "02:r2 rejection sampling:rejection_sampling": _artifact(tmp_path, "c", "stats.json", unverifiable),
    }
    ctx = _ctx(tmp_path, inputs)
    summary(ctx)
    rows = json.loads((ctx.out / "summary.json").read_text())
    assert [(r["point"], r["measure"], r["value"]) for r in rows] == [
        ("base", "accuracy", 0.1), ("r1 rejection sampling", "sample accuracy", 0.3)]


def test_no_results_is_a_clear_failure(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, {"00:base:tasks": _artifact(tmp_path, "a", "other.json", {})})
    with pytest.raises(JobFailed, match="none of its inputs"):
        summary(ctx)


def test_two_accuracy_evals_are_kept_apart(tmp_path: Path) -> None:
    """First and last accuracy come from one eval (the stage's first), and each eval's bars
    are their own series: a task accuracy is never compared with a benchmark's."""
    inputs = {
        "00:base:tasks": _artifact(tmp_path, "a", "eval.json", {"accuracy": 0.1}),
        "00:base:mmlu": _artifact(tmp_path, "b", "eval.json", {"accuracy": 0.3}),
        "01:r1 sft:tasks": _artifact(tmp_path, "c", "eval.json", {"accuracy": 0.5}),
        "01:r1 sft:mmlu": _artifact(tmp_path, "d", "eval.json", {"accuracy": 0.25}),
    }
    ctx = _ctx(tmp_path, inputs, {"evals": ["tasks", "mmlu"]})
    summary(ctx)
    stats = json.loads((ctx.out / "stats.json").read_text())
    assert (stats["first_accuracy"], stats["last_accuracy"]) == (0.1, 0.5)  # tasks: the stage lists it first
    assert stats["accuracy_by_eval"] == {"mmlu": {"first": 0.3, "last": 0.25}, "tasks": {"first": 0.1, "last": 0.5}}
    assert (ctx.out / "accuracy.png").stat().st_size > 0
