"""SFT, DPO and eval.tasks on a tiny model: the losses are right and they fall."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from runtime.jobs import registry
from runtime.jobs.context import JobFailed
from runtime.jobs.post_jobs import batch_indices, heldout_lines, post_schedule
from runtime.post import train as P
from runtime.train.schedule import lr_at

from .conftest import make_ctx, run_killed_at

TASKS = {"format": "tasks", "val_fraction": 0.2,
         "generate": {"kinds": ["add", "reverse"], "count": 40, "difficulty": 1, "seed": 0}}


@pytest.fixture
def dataset(job):
    return job("data.dataset", TASKS, name="dataset")


def test_dpo_loss_equals_a_hand_computed_value():
    pc, pr = torch.tensor([-4.0, -6.0]), torch.tensor([-5.0, -3.0])
    rc, rr = torch.tensor([-4.5, -5.0]), torch.tensor([-4.0, -4.0])
    length = torch.tensor([2.0, 4.0])
    loss, info = P.dpo_loss(pc, pr, rc, rr, length, beta=0.5, nll=0.2)
    # row 0: margin 0.5*((−4+4.5)−(−5+4)) = 0.75; row 1: 0.5*((−6+5)−(−3+4)) = −1.0
    pref = [math.log1p(math.exp(-0.75)), math.log1p(math.exp(1.0))]
    nll = [4.0 / 2, 6.0 / 4]
    expected = sum(p + 0.2 * n for p, n in zip(pref, nll, strict=True)) / 2
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(info["reward_accuracy"]) == 0.5 and float(info["reward_margin"]) == pytest.approx(-0.125)
    assert all(not v.requires_grad for v in info.values())  # read with the loss, once a step


def test_packing_keeps_conversations_apart():
    rows = P.pack([([1, 2, 3], [2, 3, -100]), ([4, 5], [5, -100]), ([6] * 5, [7] * 5)], context=6)
    assert sorted(len(r[0]) for r in rows) == [5, 5]
    packed = next(r for r in rows if 1 in r[0])
    assert packed[2] == [0, 0, 0, 1, 1]
    tokens, targets, docs = P.pad_rows(rows)
    assert tokens.shape == (2, 5) and (targets[docs != docs[:, :1]] != 0).all()


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    schedule = post_schedule({"lr": 1e-4}, 100)
    lrs = [lr_at(s, schedule) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:], strict=False))
    assert lrs[-1] == pytest.approx(0.1)


def test_a_spec_schedule_sets_kind_warmup_and_floor():
    """What `sft { lr = 1e-4  schedule = linear(warmup = 20%, min_lr = 1e-5) }` compiles to."""
    cfg = {"lr": 1e-4, "schedule": {"kind": "linear", "warmup_steps": 0, "warmup_fraction": 0.2,
                                    "min_ratio": 0.1, "decay_fraction": 0.2}}
    schedule = post_schedule(cfg, 50)
    assert (schedule["kind"], schedule["warmup_steps"]) == ("linear", 10)
    assert schedule["min_lr"] == pytest.approx(0.1)
    lrs = [lr_at(s, schedule) for s in range(50)]
    assert lrs[9] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1)
    assert lrs[30] == pytest.approx(1.0 - 0.9 * 21 / 40)  # linear, not cosine


def test_sft_loss_falls(job, dataset, checkpoint, tokenizer_dir):
    out = job("post.sft", {"lr": 3e-3, "steps": 30, "batch": 8, "seed": 0},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})
    stats = json.loads((out / "train.json").read_text())
    assert stats["loss_last"] < 0.7 * stats["loss_first"]
    assert (out / "meta.json").exists() and "### SFT" in (out / "report.md").read_text()


def test_sft_measures_its_held_out_loss_as_it_trains(job, dataset, checkpoint, tokenizer_dir):
    """Before the first step, every `eval_every` steps and after the last: the masked loss
    on conversations SFT never trains on, falling here, with the curve in the report."""
    out = job("post.sft", {"lr": 3e-3, "steps": 25, "batch": 8, "seed": 0, "eval_every": 10},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})
    heldout = json.loads((out / "train.json").read_text())["heldout"]
    assert [row["step"] for row in heldout] == [0, 10, 20, 25]
    assert heldout[-1]["val_loss"] < 0.8 * heldout[0]["val_loss"]
    report = (out / "report.md").read_text()
    assert "held-out masked loss" in report and "![loss](plots/loss.png)" in report
    assert (out / "plots" / "loss.png").read_bytes().startswith(b"\x89PNG")


def test_without_held_out_records_post_training_measures_nothing(job, checkpoint, tokenizer_dir):
    dataset = job("data.dataset", {**TASKS, "val_fraction": 0.0}, name="all_train")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    out = job("post.sft", {"lr": 3e-3, "steps": 3, "batch": 4}, inputs)
    assert json.loads((out / "train.json").read_text())["heldout"] == []
    ref = job("post.dpo_reference", {"mask": "formatting_tokens"}, inputs)
    out = job("post.dpo", {"steps": 2, "batch": 4}, {**inputs, "reference": ref})
    assert json.loads((out / "train.json").read_text())["heldout"] == []


def test_held_out_lines_point_at_overfitting():
    rising = [{"step": 0, "val_loss": 2.0}, {"step": 10, "val_loss": 1.2}, {"step": 20, "val_loss": 1.5}]
    assert "lowest 1.200 at step 10, then rising" in heldout_lines(rising)[0]
    falling = [{"step": 0, "val_loss": 2.0}, {"step": 10, "val_loss": 1.2}, {"step": 20, "val_loss": 1.205}]
    assert heldout_lines(falling) == ["- held-out loss 2.000 -> 1.205"]  # within 1%: noise
    assert heldout_lines([]) == []


def test_dpo_reference_then_dpo_raises_reward_margins(job, dataset, checkpoint, tokenizer_dir):
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    ref = job("post.dpo_reference", {"mask": "formatting_tokens"}, inputs)
    out = job("post.dpo", {"beta": 0.5, "lr": 3e-3, "steps": 15, "batch": 8, "nll": 0.2,
                           "mask": "formatting_tokens"}, {**inputs, "reference": ref})
    stats = json.loads((out / "train.json").read_text())
    final = stats["final"]
    assert final["reward_margin"] > 0 and final["reward_accuracy"] > 0.5
    # held out: the policy starts as the reference, so its implicit rewards start at zero
    start, end = stats["heldout"][0], stats["heldout"][-1]
    assert (start["step"], start["val_reward_margin"], start["val_reward_accuracy"]) == (0, 0.0, 0.0)
    assert end["step"] == 15 and end["val_reward_margin"] > 0
    assert "held-out reward accuracy 0.0% ->" in (out / "report.md").read_text()
    with pytest.raises(JobFailed, match="mask"):
        job("post.dpo_reference", {"mask": "headers"}, inputs, name="bad")


def test_eval_tasks_scores_greedy_answers(job, dataset, checkpoint, tokenizer_dir):
    out = job("eval.tasks", {"params": {"count": 6, "max_new_tokens": 4}},
              {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})
    result = json.loads((out / "eval.json").read_text())
    assert result["count"] == 6 and 0.0 <= result["accuracy"] <= 1.0
    assert set(result["per_kind"]) == {"add", "reverse"}
    assert "| kind | accuracy |" in (out / "report.md").read_text()


def test_batches_cover_each_epoch_once():
    seen = [i for step in range(5) for i in batch_indices(10, 4, step, seed=3)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert seen[:10] != list(range(10))


@pytest.mark.parametrize("kind", ["post.sft", "post.dpo", "post.reward_model"])
def test_a_killed_post_training_run_resumes_to_the_same_weights(
        tmp_path, job, dataset, checkpoint, tokenizer_dir, kind):
    """Each training step kind saves its state every `checkpoint_every` steps and, run again
    after a kill, continues from it to exactly the weights of an uninterrupted run."""
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    config: dict = {"lr": 3e-3, "steps": 6, "batch": 4, "checkpoint_every": 2}
    if kind == "post.dpo":
        config |= {"beta": 0.5, "nll": 0.2, "mask": "formatting_tokens"}
        inputs["reference"] = job("post.dpo_reference", {"mask": "formatting_tokens"}, dict(inputs))
    whole = make_ctx(tmp_path, kind, config, inputs, "whole")
    registry.get(kind)(whole)

    killed = run_killed_at(make_ctx(tmp_path, kind, config, inputs, "killed"), 5)
    latest = (killed.work / "post-state" / "LATEST").read_text()
    assert json.loads((killed.work / "post-state" / latest / "state.json").read_text())["step"] == 4
    registry.get(kind)(killed)
    weights = sorted(p.name for p in whole.out.glob("*.safetensors"))
    assert weights and weights == sorted(p.name for p in killed.out.glob("*.safetensors"))
    for name in weights:
        a, b = load_file(str(whole.out / name)), load_file(str(killed.out / name))
        assert all(torch.equal(a[k], b[k]) for k in a), name


def _killed_at_5(tmp_path, config, inputs, name):
    killed = make_ctx(tmp_path, "post.sft", config, inputs, name)
    killed.metrics_path = tmp_path / f"{name}.jsonl"
    return run_killed_at(killed, 5)


def _steps(metrics: Path, key: str = "loss") -> list[int]:
    return [row["step"] for row in map(json.loads, metrics.read_text().splitlines()) if key in row]


def _heldout(metrics: Path) -> list[tuple[int, float]]:
    return [(row["step"], row["val_loss"]) for row in map(json.loads, metrics.read_text().splitlines())
            if "val_loss" in row]


@pytest.mark.parametrize("damage", [None, "weights.safetensors", "optimizer.safetensors", "state.json"])
def test_a_resumed_sft_run_logs_each_step_once_and_survives_a_damaged_state(
        tmp_path, dataset, checkpoint, tokenizer_dir, damage):
    """The state is one folder per step behind an atomic LATEST, so weights, optimizer and
    step can never come from different steps. Step 4 (0-based) ran after the step-4 save
    and runs again on resume: its metrics row is not repeated. A damaged state is kept
    aside and the job starts over, reaching the same weights as an uninterrupted run."""
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    config = {"lr": 3e-3, "steps": 6, "batch": 4, "checkpoint_every": 2}
    whole = make_ctx(tmp_path, "post.sft", config, inputs, "whole")
    whole.metrics_path = tmp_path / "whole.jsonl"
    registry.get("post.sft")(whole)
    killed = _killed_at_5(tmp_path, config, inputs, "killed")
    assert _steps(killed.metrics_path) == [0, 1, 2, 3, 4]
    if damage is not None:
        bad = killed.work / "post-state" / "step-000004" / damage
        bad.write_bytes(bad.read_bytes()[:10])
    registry.get("post.sft")(killed)
    assert _steps(killed.metrics_path) == list(range(6))
    # held-out loss after 0..6 steps, each once: the one measured just before the step-4 save
    # is restored with the state, the killed attempt's later ones are measured again
    assert [step for step, _ in _heldout(killed.metrics_path)] == list(range(7))
    assert _heldout(killed.metrics_path) == _heldout(whole.metrics_path)
    if damage is not None:
        assert (killed.work / "post-state" / "damaged-step-000004" / damage).stat().st_size == 10
    a = load_file(str(whole.out / "model.safetensors"))
    b = load_file(str(killed.out / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sft_lifts_verified_task_accuracy_above_the_base(job, checkpoint, tokenizer_dir):
    data = job("data.dataset", {"format": "tasks", "val_fraction": 0.1,
                                "generate": {"kinds": ["compare"], "count": 200, "seed": 0}},
               name="compare")
    inputs = {"tokenizer": tokenizer_dir, "dataset": data}
    evalcfg = {"params": {"count": 20, "max_new_tokens": 4}}
    base = job("eval.tasks", evalcfg, {**inputs, "checkpoint": checkpoint}, name="eval_base")
    sft = job("post.sft", {"lr": 3e-3, "steps": 40, "batch": 8}, {**inputs, "checkpoint": checkpoint})
    after = job("eval.tasks", evalcfg, {**inputs, "checkpoint": sft}, name="eval_sft")
    before = json.loads((base / "eval.json").read_text())["accuracy"]
    assert before == 0.0  # a random model does not even produce the answer format
    assert json.loads((after / "eval.json").read_text())["accuracy"] >= 0.25


def test_a_round_average_is_the_mean_of_its_members_and_carries_the_tokenizer(
        job, dataset, checkpoint, tokenizer_dir):
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    a = job("post.sft", {"lr": 3e-3, "steps": 2, "batch": 4, "seed": 0}, inputs, name="a")
    b = job("post.sft", {"lr": 3e-3, "steps": 2, "batch": 4, "seed": 1}, inputs, name="b")
    out = job("model.average", {"round": 1},
              {"tokenizer": tokenizer_dir, "member0": a, "member1": b}, name="avg")
    wa, wb, avg = (load_file(str(d / "model.safetensors")) for d in (a, b, out))
    for name, tensor in avg.items():
        torch.testing.assert_close(tensor, (wa[name] + wb[name]) / 2)
    assert (out / "tokenizer.json").exists()  # `herd chat` on the average needs nothing else
    assert "Uniform average of 2 checkpoints: a, b" in (out / "report.md").read_text()
    with pytest.raises(JobFailed, match="member0"):
        job("model.average", {"round": 1}, {"tokenizer": tokenizer_dir}, name="none")


def test_post_training_steps_run_under_bf16_autocast(job, dataset, checkpoint, tokenizer_dir,
                                                     monkeypatch):
    """The GPU's mixed-precision path (fp32 weights, bf16 autocast) through SFT, the reward
    model and DPO, run on a CPU by letting `runtime.train.precision` autocast there."""
    from runtime.train import precision

    monkeypatch.setattr(precision, "AUTOCAST_DEVICES", {"cuda", "cpu"})
    monkeypatch.setenv("HERD_KERNELS", "reference")
    inputs = {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset}
    common = {"lr": 3e-3, "steps": 4, "batch": 4, "seed": 0, "precision": "bf16"}
    sft = job("post.sft", common, inputs, name="sft16")
    assert math.isfinite(json.loads((sft / "train.json").read_text())["loss_last"])
    job("post.reward_model", common, inputs, name="rm16")
    ref = job("post.dpo_reference", {"mask": "formatting_tokens", "precision": "bf16"}, inputs,
              name="ref16")
    dpo = job("post.dpo", {**common, "beta": 0.5, "nll": 0.2, "mask": "formatting_tokens"},
              {**inputs, "reference": ref}, name="dpo16")
    assert math.isfinite(json.loads((dpo / "train.json").read_text())["final"]["reward_margin"])


def test_sft_keeps_packed_conversations_apart_even_without_the_models_document_mask(
        tmp_path, job, dataset, tokenizer_dir):
    """Packing is herd's choice, not the model's: SFT masks attention per conversation (and
    restarts positions) whatever `document_mask` the model was pre-trained with."""
    from runtime.model import from_config, save_checkpoint

    from .conftest import TINY

    outs = []
    for flag in (True, False):
        ckpt = save_checkpoint(from_config({**TINY, "document_mask": flag}, seed=0), tmp_path / f"m{flag}")
        outs.append(job("post.sft", {"lr": 3e-3, "steps": 3, "batch": 4},
                        {"checkpoint": ckpt, "tokenizer": tokenizer_dir, "dataset": dataset}, name=f"sft{flag}"))
    a, b = (load_file(str(o / "model.safetensors")) for o in outs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_post_training_that_diverges_fails_before_saving_nan_weights(job, dataset, checkpoint, tokenizer_dir):
    with pytest.raises(JobFailed, match=r"the (loss|gradient norm) is (nan|inf) at step \d+: training diverged"):
        job("post.sft", {"lr": 1e30, "steps": 20, "batch": 4, "eval_every": 100},
            {"checkpoint": checkpoint, "tokenizer": tokenizer_dir, "dataset": dataset})


def test_a_post_training_step_reads_the_device_once_after_queueing_its_backward(tmp_path, device_reads):
    """Reading a number off the device stalls the host until the device is done, and the
    device then idles while the host launches what comes next. The loss, the step's other
    means (DPO's reward accuracy, ...) and the gradient norm come back in one read, after
    the backward and the clipping are queued; the logged values are still the step's."""
    from runtime.jobs.post_jobs import StepOut, train_loop

    model = torch.nn.Linear(4, 1)
    x, y = torch.randn(8, 4), torch.randn(8)

    def step_fn(step: int, idx: list[int]) -> StepOut:
        err = model(x[idx]).squeeze(-1) - y[idx]
        return StepOut((err**2).mean(), {"bias": err.detach().mean()}, float(len(idx)))

    ctx = make_ctx(tmp_path, "post.sft", {"steps": 3, "batch": 4, "lr": 1e-2}, None, "reads")
    result = train_loop(ctx, model, [(list(model.parameters()), 1e-2)], 8, step_fn)
    assert device_reads == ["tolist"] * 3  # one read a step
    assert [sorted(h) for h in result.history] == [["bias", "loss"]] * 3
    assert all(math.isfinite(h["loss"]) and isinstance(h["bias"], float) for h in result.history)


def test_sequence_logprobs_are_the_log_softmax_of_the_logits_without_holding_them(monkeypatch):
    """DPO's log-probabilities come from the fused loss's per-token values: the same numbers
    as the log-softmax of the full logits, which are never built (no call returns logits)."""
    from runtime.model import Llama, from_config

    model = from_config({"vocab_size": 300, "dim": 64, "layers": 2, "heads": 4, "kv_heads": 2,
                         "head_dim": 16, "ffn_dim": 160}, seed=0)
    g = torch.Generator().manual_seed(0)
    tokens, targets = torch.randint(0, 300, (3, 20), generator=g), torch.randint(0, 300, (3, 20), generator=g)
    targets[:, :5] = -100  # the prompt
    targets[1, :12] = -100
    with torch.no_grad():
        logits = model(tokens)
    mask = targets != -100
    want = (torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0] * mask).sum(-1)
    forward = Llama.forward

    def no_logits(self, tokens, doc_ids=None, targets=None, **kwargs):
        assert targets is not None, "the full logits were asked for"
        return forward(self, tokens, doc_ids, targets, **kwargs)

    monkeypatch.setattr(Llama, "forward", no_logits)
    logp, count = P.sequence_logprobs(model, tokens, targets)
    torch.testing.assert_close(logp, want, rtol=1e-6, atol=1e-5)
    assert count.tolist() == [15, 8, 15] and logp.dtype == torch.float32
