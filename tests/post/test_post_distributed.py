"""Post-training on several ranks: `herd run --nproc 2` runs SFT, DPO and the reward model
under torchrun with FSDP2 (gloo on CPU). Each rank trains on its slice of every batch; the
loss curve, the held-out curve and the saved weights match one process, LoRA included, and
the resumable state crosses world sizes both ways."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from runtime.jobs import registry
from runtime.jobs.context import JobContext, JobFailed

from .conftest import make_ctx

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")

TASKS = {"format": "tasks", "val_fraction": 0.2,
         "generate": {"kinds": ["add", "reverse"], "count": 40, "difficulty": 1, "seed": 0}}
LORA = {"kind": "lora", "rank": 4, "alpha": 8.0, "targets": ["q", "v", "down"]}


@pytest.fixture
def inputs(job, checkpoint: Path, tokenizer_dir: Path) -> dict[str, Path]:
    return {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": job("data.dataset", TASKS, name="dataset")}


def context(tmp_path: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path], name: str,
            nproc: int = 1) -> JobContext:
    """A job's context with its own metrics file, as the executor gives every job."""
    ctx = make_ctx(tmp_path, kind, config, inputs, name)
    ctx.metrics_path = tmp_path / f"{name}.jsonl"
    ctx.settings["nproc"] = nproc
    return ctx


def run(tmp_path: Path, kind: str, config: dict[str, Any], inputs: dict[str, Path], name: str,
        nproc: int = 1) -> JobContext:
    ctx = context(tmp_path, kind, config, inputs, name, nproc)
    registry.get(kind)(ctx)
    assert (ctx.work / "dist" / "job.json").is_file() == (nproc > 1)  # it really went through torchrun
    return ctx


def rows(tmp_path: Path, job: str, key: str) -> list[float]:
    lines = (tmp_path / f"{job}.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if key in r]


def same_weights(a: Path, b: Path, name: str = "model.safetensors", start: Path | None = None,
                 tolerance: float = 1e-3) -> None:
    """Each tensor's update (its weights minus `start`'s, or minus zero: a zero-initialised
    head) agrees to `tolerance` in relative L2. Not elementwise: AdamW moves a weight whose
    gradient is near zero by up to lr whatever that gradient's rounding, so the ranks' other
    summation order shows there as 1e-6..1e-5 and how much depends on the CPU's BLAS (a
    1e-6 elementwise bound passed on one machine and failed on another with the same code)."""
    wa, wb = load_file(str(a / name)), load_file(str(b / name))
    assert set(wa) == set(wb)
    w0 = load_file(str(start / name)) if start is not None else {}
    for key in wa:
        base = w0.get(key, torch.zeros_like(wb[key]))
        moved = (wb[key] - base).norm()
        assert (wa[key] - wb[key]).norm() <= tolerance * moved + 1e-12, (key, float(moved))


def test_sft_on_two_ranks_matches_one_process(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """SFT's loss is the mean over target tokens, which the two ranks hold unequally: each
    rank's mean is weighed by its share, so the gradient is still the whole batch's."""
    config = {"lr": 1e-2, "steps": 4, "batch": 4, "seed": 0, "eval_every": 2, "precision": "fp32"}
    one = run(tmp_path, "post.sft", config, inputs, "one")
    two = run(tmp_path, "post.sft", config, inputs, "two", nproc=2)
    assert len(rows(tmp_path, "two", "loss")) == 4
    assert rows(tmp_path, "two", "loss") == pytest.approx(rows(tmp_path, "one", "loss"), rel=1e-4)
    assert rows(tmp_path, "two", "val_loss") == pytest.approx(rows(tmp_path, "one", "val_loss"), rel=1e-4)
    same_weights(one.out, two.out, start=inputs["checkpoint"])
    assert (two.out / "tokenizer.model").is_file() and (two.out / "plots" / "loss.png").is_file()
    assert two.progress.done == two.progress.total == 4  # rank 0's progress reached the parent


def test_dpo_with_lora_and_a_reward_model_on_two_ranks_match_one_process(
        tmp_path: Path, inputs: dict[str, Path]) -> None:
    """LoRA's adapters are sharded with their blocks and folded into the gathered weights on
    rank 0; the reward model's head is saved beside its body."""
    ref = run(tmp_path, "post.dpo_reference", {"mask": "formatting_tokens"}, inputs, "reference").out
    dpo = {"beta": 0.5, "lr": 1e-2, "steps": 3, "batch": 4, "eval_every": 3, "lora": LORA, "precision": "fp32"}
    outs = [run(tmp_path, "post.dpo", dpo, {**inputs, "reference": ref}, f"dpo{n}", nproc=n).out for n in (1, 2)]
    for key in ("loss", "reward_accuracy", "reward_margin", "val_reward_accuracy"):
        assert rows(tmp_path, "dpo2", key) == pytest.approx(rows(tmp_path, "dpo1", key), rel=1e-4, abs=1e-6)
    same_weights(*outs, start=inputs["checkpoint"])
    assert set(load_file(str(outs[1] / "model.safetensors"))) == set(load_file(str(inputs["checkpoint"] / "model.safetensors")))

    rm = {"lr": 1e-3, "steps": 3, "batch": 4, "eval_every": 3, "precision": "fp32"}
    outs = [run(tmp_path, "post.reward_model", rm, inputs, f"rm{n}", nproc=n).out for n in (1, 2)]
    assert rows(tmp_path, "rm2", "loss") == pytest.approx(rows(tmp_path, "rm1", "loss"), rel=1e-4)
    # the body's gradients are tiny while the zero-initialised head grows, and AdamW moves
    # each weight by about lr whatever its gradient's size: the ranks' other summation
    # order shows as up to ~1% of the 5e-4 the weights moved
    same_weights(*outs, start=inputs["checkpoint"], tolerance=2e-2)
    same_weights(*outs, name="reward_head.safetensors")
    one, two = (json.loads((o / "eval.json").read_text()) for o in outs)
    assert two["accuracy"] == one["accuracy"] and two["train_accuracy"] == one["train_accuracy"]


def test_sft_and_the_reward_model_split_heads_over_a_tensor_parallel_pair(
        tmp_path: Path, inputs: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """`run { parallel { tensor = 2 } }`: both ranks hold half of every block's heads and
    FFN and train on the same rows, and match one process; a LoRA job under the same
    setting stays data parallel (its adapters wrap the projections tensor parallelism would
    split) and matches too."""
    caplog.set_level("INFO")

    def tensor_run(kind: str, config: dict[str, Any], name: str) -> JobContext:
        ctx = context(tmp_path, kind, config, inputs, name, nproc=2)
        ctx.settings["parallel"] = {"tensor": 2, "pipeline": 4}  # pipeline: estimates only
        registry.get(kind)(ctx)
        assert (ctx.work / "dist" / "job.json").is_file()
        return ctx

    sft = {"lr": 1e-2, "steps": 3, "batch": 3, "seed": 0, "eval_every": 3, "precision": "fp32"}
    one = run(tmp_path, "post.sft", sft, inputs, "one")
    two = tensor_run("post.sft", sft, "tp")  # a batch of 3: one replica, nothing to split
    for key in ("loss", "val_loss"):
        assert rows(tmp_path, "tp", key) == pytest.approx(rows(tmp_path, "one", key), rel=1e-4)
    same_weights(one.out, two.out, start=inputs["checkpoint"])

    rm = {"lr": 1e-3, "steps": 2, "batch": 4, "eval_every": 2, "precision": "fp32"}
    outs = [run(tmp_path, "post.reward_model", rm, inputs, "rm1").out,
            tensor_run("post.reward_model", rm, "rm-tp").out]
    assert rows(tmp_path, "rm-tp", "loss") == pytest.approx(rows(tmp_path, "rm1", "loss"), rel=1e-4)
    assert rows(tmp_path, "rm-tp", "val_pair_accuracy") == rows(tmp_path, "rm1", "val_pair_accuracy")
    same_weights(*outs, name="reward_head.safetensors")

    lora = {**sft, "batch": 4, "lora": LORA}
    run(tmp_path, "post.sft", lora, inputs, "lora1")
    tensor_run("post.sft", lora, "lora-tp")
    assert rows(tmp_path, "lora-tp", "loss") == pytest.approx(rows(tmp_path, "lora1", "loss"), rel=1e-4)
    assert "this job runs data parallel on every rank, not in groups of 2" in caplog.text
    assert "run { parallel { pipeline = 4 } } shapes the estimates only" in caplog.text


def test_a_post_training_state_resumes_at_another_world_size(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """The state saved after step 2 by two ranks continues in one process, and one
    process's continues on two ranks: both end where an uninterrupted run ends."""
    config = {"lr": 1e-2, "steps": 4, "batch": 4, "seed": 0, "checkpoint_every": 2, "precision": "fp32"}
    whole = run(tmp_path, "post.sft", config, inputs, "whole")
    for saved_by, resumed_by in ((2, 1), (1, 2)):
        saver = run(tmp_path, "post.sft", config, inputs, f"saved-by-{saved_by}", nproc=saved_by)
        resumer = context(tmp_path, "post.sft", config, inputs, f"resumed-by-{resumed_by}", resumed_by)
        shutil.copytree(saver.work / "post-state", resumer.work / "post-state")
        registry.get("post.sft")(resumer)
        assert len(rows(tmp_path, resumer.job_id, "lr")) == 2  # it trained steps 3 and 4 only
        same_weights(whole.out, resumer.out, start=inputs["checkpoint"])


def test_a_batch_that_does_not_split_over_the_ranks_fails_before_they_start(
        tmp_path: Path, inputs: dict[str, Path]) -> None:
    ctx = context(tmp_path, "post.sft", {"steps": 2, "batch": 3}, inputs, "odd", nproc=2)
    with pytest.raises(JobFailed, match="a batch of 3 rows does not split over 2 processes"):
        registry.get("post.sft")(ctx)
    assert not (ctx.work / "dist").exists()


def test_a_job_failing_in_its_ranks_fails_with_its_own_message(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """What a rank raises (here: DPO without its reference) reaches `herd run` as the job's
    one clear error, not a torchrun traceback."""
    ctx = context(tmp_path, "post.dpo", {"steps": 2, "batch": 2}, inputs, "no-reference", nproc=2)
    with pytest.raises(JobFailed, match=r"^no-reference: post.dpo needs input\(s\) reference$"):
        registry.get("post.dpo")(ctx)
    assert (ctx.work / "dist" / "job.json").is_file()  # it did get as far as the ranks


@pytest.fixture
def bf16_inputs(inputs: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    """The inputs with a bf16 checkpoint, as every imported Hugging Face Llama is."""
    from runtime.model import load_checkpoint, save_checkpoint

    model, _ = load_checkpoint(inputs["checkpoint"])
    save_checkpoint(model.to(torch.bfloat16), tmp_path / "bf16")
    return {**inputs, "checkpoint": tmp_path / "bf16"}


def test_a_bf16_base_trains_on_two_ranks_beside_fp32_heads_and_adapters(
        tmp_path: Path, bf16_inputs: dict[str, Path]) -> None:
    """FSDP wants one dtype per sharded unit: the reward model's fp32 head is a unit of its
    own (gathered in fp32 under a bf16 policy too, so its scores are not rounded to bf16),
    and LoRA's fp32 adapters sit beside a frozen bf16 base."""
    rm = {"lr": 1e-3, "steps": 2, "batch": 4, "eval_every": 2, "precision": "fp32"}
    outs = [run(tmp_path, "post.reward_model", rm, bf16_inputs, f"rm{n}", nproc=n).out for n in (1, 2)]
    assert rows(tmp_path, "rm2", "loss") == pytest.approx(rows(tmp_path, "rm1", "loss"), rel=1e-3)
    assert load_file(str(outs[1] / "model.safetensors"))["norm.weight"].dtype == torch.bfloat16
    sft = {"lr": 1e-2, "steps": 2, "batch": 4, "precision": "fp32", "lora": LORA}
    outs = [run(tmp_path, "post.sft", sft, bf16_inputs, f"sft{n}", nproc=n).out for n in (1, 2)]
    assert rows(tmp_path, "sft2", "loss") == pytest.approx(rows(tmp_path, "sft1", "loss"), rel=1e-3)


def test_sampling_the_dpo_reference_and_task_evals_split_over_ranks_write_what_one_process_writes(
        tmp_path: Path, inputs: dict[str, Path]) -> None:
    """Rejection sampling, the DPO reference and `eval.tasks` hold the whole model on every
    rank and take every N-th chunk each, with the chunk's own seed: the files are byte for
    byte those of one process, whatever the number of ranks (3 here: chunks do not divide
    evenly)."""
    from runtime.train.dist import wanted

    assert wanted(context(tmp_path, "post.sft", {}, inputs, "probe", nproc=3)) == 3
    rm = run(tmp_path, "post.reward_model", {"lr": 1e-3, "steps": 2, "batch": 4}, inputs, "rm").out
    rs = {"k": 3, "count": 40, "scorer": "rm", "temperature": 1.0, "max_new_tokens": 4}  # keeps one per prompt
    ctxs = [run(tmp_path, "post.rejection_sampling", rs, {**inputs, "reward_model": rm}, f"rs{n}", nproc=n)
            for n in (1, 3)]
    outs = [c.out for c in ctxs]
    for name in ("train.sft.jsonl", "stats.json", "dataset.json"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    # the progress bar's running count adds up every rank's kept samples
    assert ctxs[0].progress.info["kept"] == ctxs[1].progress.info["kept"] == 32
    stats = json.loads((outs[1] / "stats.json").read_text())
    assert stats["prompts"] == stats["accepted"] == 32  # 2 chunks of 16 over 3 ranks: one idles
    outs = [run(tmp_path, "post.dpo_reference", {"mask": "formatting_tokens"}, inputs, f"ref{n}", nproc=n).out
            for n in (1, 2)]
    a, b = (load_file(str(o / "reference.safetensors")) for o in outs)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    tasks = {"params": {"count": 8, "max_new_tokens": 4}}  # greedy: every rank's answers are one process's
    outs = [run(tmp_path, "eval.tasks", tasks, inputs, f"tasks{n}", nproc=n).out for n in (1, 2)]
    assert (outs[0] / "eval.json").read_bytes() == (outs[1] / "eval.json").read_bytes()
