"""Stages after pre-training: perplexity eval, gated context extension, annealing + averaging."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from runtime.jobs.context import JobFailed
from runtime.jobs.registry import get
from runtime.model import load_checkpoint

from .conftest import MODEL, make_ctx, train_config


@pytest.fixture(scope="module")
def base(tmp_path_factory, artifacts):
    tmp = tmp_path_factory.mktemp("base")
    ctx = make_ctx(tmp, "base", "train.pretrain", train_config(steps=4), artifacts)
    get("train.pretrain")(ctx)
    return ctx.out


def extend_config(gate: dict, max_extra: float = 0.0) -> dict:
    cfg = train_config(steps=2, model={**MODEL, "max_context": 128}, context=128, base_context=64,
                       batch=[{"seqs": 2, "tokens": 128, "from_tokens": 0}],
                       checkpoint_every=1, eval_every=0, max_extra=max_extra, gate=gate,
                       needle={"trials": 1, "depths": [0.0, 1.0]})
    cfg["schedule"] = {"kind": "constant", "peak_lr": 1e-3, "min_lr": 1e-3, "warmup_steps": 0,
                       "total_steps": 2}
    return cfg


def test_perplexity_eval_per_source(tmp_path, artifacts, base):
    ctx = make_ctx(tmp_path, "ppl", "eval.perplexity",
                   {"params": {"tokens": 256}, "context": 32}, {**artifacts, "checkpoint": base})
    get("eval.perplexity")(ctx)
    result = json.loads((ctx.out / "eval.json").read_text())["sources"]["code"]
    assert result["perplexity"] == pytest.approx(torch.tensor(result["loss"]).exp().item(), rel=1e-5)
    assert "| code |" in (ctx.out / "report.md").read_text()


def test_extend_passes_gates_and_reports_them(tmp_path, artifacts, base):
    gate = {"short_context_recovery": {"op": ">=", "value": 0.0}, "needle": {"op": ">=", "value": 0.0}}
    ctx = make_ctx(tmp_path, "ext", "train.extend", extend_config(gate), {**artifacts, "checkpoint": base})
    get("train.extend")(ctx)
    gates = json.loads((ctx.out / "gates.json").read_text())
    assert gates["needle"]["lengths"] == [64, 128] and len(gates["needle"]["grid"]) == 2
    assert all(g["passed"] for g in gates["rounds"][-1]["gates"].values())
    model, _ = load_checkpoint(ctx.out)
    assert model.args.max_context == 128
    assert (ctx.out / "plots" / "needle.png").is_file() and "### Gates" in (ctx.out / "report.md").read_text()


def test_a_gate_named_after_a_spec_eval_reads_its_measurement_and_settings(tmp_path, artifacts, base):
    gate = {"hay": {"op": ">=", "value": 0.0, "eval": "needle"}}
    cfg = {**extend_config(gate), "needle": {"trials": 1, "depths": [0.5], "lengths": [96]}}
    ctx = make_ctx(tmp_path, "ext", "train.extend", cfg, {**artifacts, "checkpoint": base})
    get("train.extend")(ctx)
    gates = json.loads((ctx.out / "gates.json").read_text())
    assert gates["needle"]["lengths"] == [96] and gates["needle"]["depths"] == [0.5]
    assert gates["rounds"][-1]["gates"]["hay"]["passed"]


def test_failing_gate_trains_extra_then_fails_clearly(tmp_path, artifacts, base):
    gate = {"needle": {"op": ">=", "value": 2.0}}
    ctx = make_ctx(tmp_path, "bad", "train.extend", extend_config(gate, max_extra=1.0),
                   {**artifacts, "checkpoint": base})
    with pytest.raises(JobFailed, match=r"needle = .* \(needs >= 2.0\)") as info:
        get("train.extend")(ctx)
    assert "after 4 steps (2 extra" in str(info.value)


def test_anneal_keeps_last_checkpoints_and_average_is_exact(tmp_path, artifacts, base):
    cfg = train_config(steps=4, checkpoint_every=1, keep_last=3, eval_every=0)
    cfg["schedule"] = {"kind": "linear", "peak_lr": 1e-3, "min_lr": 0.0, "warmup_steps": 0,
                       "total_steps": 4}
    ctx = make_ctx(tmp_path, "ann", "train.anneal", cfg, {**artifacts, "checkpoint": base})
    get("train.anneal")(ctx)
    kept = sorted(p.name for p in ctx.out.glob("ckpt-*"))
    assert kept == ["ckpt-000002", "ckpt-000003", "ckpt-000004"]
    avg = make_ctx(tmp_path, "avg", "model.average", {"last": 2}, {"checkpoints": ctx.out})
    get("model.average")(avg)
    a, b = (load_checkpoint(ctx.out / k)[0].state_dict() for k in kept[-2:])
    m = load_checkpoint(avg.out)[0].state_dict()
    assert all(torch.allclose(m[k], (a[k] + b[k]) / 2) for k in m)
    too_many = make_ctx(tmp_path, "avg5", "model.average", {"last": 5}, {"checkpoints": ctx.out})
    with pytest.raises(JobFailed, match="raise keep_last"):
        get("model.average")(too_many)


def test_needle_eval_job_writes_grid_and_heatmap(tmp_path, artifacts, base):
    # the base model's weights at a context long enough for the passkey prompt
    from runtime.model import from_config
    from runtime.model.checkpoint import write_checkpoint

    longer = {**MODEL, "max_context": 96}
    model = from_config(longer)
    model.load_state_dict(load_checkpoint(base)[0].state_dict())
    ckpt = write_checkpoint(model.state_dict(), model.config, tmp_path / "long")
    cfg = {"eval": "needle", "params": {"depths": [0.0, 0.5, 1.0], "lengths": None, "trials": 2},
           "model": longer, "context": 96, "seed": 0}
    ctx = make_ctx(tmp_path, "needle", "eval.needle", cfg, {**artifacts, "checkpoint": ckpt})
    get("eval.needle")(ctx)
    result = json.loads((ctx.out / "eval.json").read_text())
    assert result["lengths"] == [96] and len(result["grid"]) == 3 and result["trials"] == 2
    assert all(0.0 <= v <= 1.0 for row in result["grid"] for v in row)
    assert json.loads((ctx.out / "stats.json").read_text())["needle_accuracy"] == pytest.approx(
        result["accuracy"], abs=1e-4)
    assert (ctx.out / "plots" / "needle.png").is_file() and "| 50% |" in (ctx.out / "report.md").read_text()
    too_long = make_ctx(tmp_path, "needle2", "eval.needle", {**cfg, "params": {"lengths": [128]}},
                        {**artifacts, "checkpoint": ckpt})
    with pytest.raises(JobFailed, match="exceed the model's context 96"):
        get("eval.needle")(too_long)


def test_short_context_recovery_eval_against_a_baseline(tmp_path, artifacts, base):
    cfg = {"eval": "short_context_recovery", "params": {"tokens": 256}, "model": MODEL,
           "context": 32, "seed": 0}
    ctx = make_ctx(tmp_path, "scr", "eval.short_context_recovery", cfg,
                   {**artifacts, "checkpoint": base, "baseline": base})
    get("eval.short_context_recovery")(ctx)
    result = json.loads((ctx.out / "eval.json").read_text())
    # the same model as its own baseline: fully recovered, exactly
    assert result["recovery"] == 1.0 and result["loss"] == result["baseline_loss"]
    assert result["context"] == 32 and "Recovery" in (ctx.out / "report.md").read_text()
    alone = make_ctx(tmp_path, "scr1", "eval.short_context_recovery", cfg, {**artifacts, "checkpoint": base})
    get("eval.short_context_recovery")(alone)
    assert "recovery" not in json.loads((alone.out / "eval.json").read_text())


def test_training_checkpoints_name_their_tokenizer_so_generate_finds_it(tmp_path, artifacts, base):
    """`herd generate STORE/<train fp>` needs no --tokenizer: the checkpoint names the
    tokenizer artifact beside it in the store, and so do annealing's kept snapshots."""
    from runtime.chat import find_tokenizer
    from runtime.model.checkpoint import read_meta

    cfg = train_config(steps=2, checkpoint_every=1, keep_last=1, eval_every=0)
    ann = make_ctx(tmp_path, "ann", "train.anneal", cfg, {**artifacts, "checkpoint": base})
    get("train.anneal")(ann)
    store = tmp_path / "store"  # runs/<spec>/store/<fingerprint>/ per artifact
    tok_id = artifacts["tokenizer"].name
    shutil.copytree(artifacts["tokenizer"], store / tok_id)
    shutil.copytree(base, store / "basefp")
    shutil.copytree(ann.out, store / "annfp")
    for checkpoint in (store / "basefp", store / "annfp", store / "annfp" / "ckpt-000002"):
        meta = read_meta(checkpoint)
        assert meta["tokenizer_id"] == tok_id
        assert find_tokenizer(checkpoint, meta, None) == store.resolve() / tok_id
