"""Post-training job kinds: datasets, task evals, SFT, DPO (reference + training), reward
models and rejection sampling. The maths lives in `runtime.post`; these wrappers read
artifacts, run loops with progress and metrics, and write artifacts + report fragments."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from runtime.data.sources import skipped_warning
from runtime.data.tokenizer import META_FILE, MODEL_FILE, Tokenizer, load_tokenizer
from runtime.executor import external
from runtime.executor.plots import line_plot
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.model import generate
from runtime.model.attention import document_mask
from runtime.model.checkpoint import write_checkpoint
from runtime.model.llama import Llama
from runtime.model.rope import document_positions
from runtime.post import datasets as D
from runtime.post import lora as LORA
from runtime.post import nf4 as NF4
from runtime.post import resume
from runtime.post import tasks as T
from runtime.post import train as P
from runtime.post.chat import IGNORE, encode_completion, encode_dialog, encode_prompt, shifted
from runtime.post.scoring import plan_batches, score_batch
from runtime.train import dist
from runtime.train.divergence import check_finite, norm_value
from runtime.train.loop import activation_checkpointing
from runtime.train.precision import training_autocast
from runtime.train.schedule import lr_at


def _load(ctx: JobContext) -> tuple[Llama, Tokenizer, dict[str, Any]]:
    """The input checkpoint on the run's device (`run { device }`: CUDA when there is one),
    its tokenizer and the dataset's metadata."""
    ctx.need("checkpoint", "tokenizer", "dataset")
    torch.manual_seed(ctx.seed)
    model = ctx.load_model()
    model.activation_checkpointing = activation_checkpointing(ctx.settings)  # for the steps that train
    return model, load_tokenizer(ctx.inputs["tokenizer"]), D.load_meta(ctx.inputs["dataset"])


def _adapt(ctx: JobContext, model: Llama) -> list[str]:
    """With `lora(...)`, freeze `model` and add the adapters (before any sharding: FSDP
    shards the adapted modules); the report line saying what trains."""
    lora = ctx.config.get("lora")
    if not lora:
        return []
    total = sum(p.numel() for p in model.parameters())
    lines = []
    if lora.get("quantize") == "nf4":
        count, stored = NF4.quantize_blocks(model)
        lines.append(f"- base projections stored in NF4: {count:,} weights in {stored / 2**20:,.1f} MiB "
                     f"({stored / count:.4g} bytes each)")
    try:
        params = LORA.add_adapters(model, lora)
    except ValueError as exc:
        raise JobFailed(f"{ctx.job_id}: {exc}; hint: lower the rank or change the targets") from None
    return [f"- {LORA.describe(lora, sum(p.numel() for p in params), total)}", *lines]


def _shard(ctx: JobContext, module: torch.nn.Module, model: Llama,
           fp32_units: tuple[torch.nn.Module, ...] = ()) -> None:
    """Under `herd run --nproc N` (this process one of the ranks), shard `module` with FSDP2
    block by block, as pre-training does. Parameter objects change: collect the groups after."""
    if dist.active():
        dist.shard(module, ctx.config.get("precision") or ctx.settings.get("precision", "bf16"),
                   blocks=model.layers, fp32_units=fp32_units, tensor_parallel=_tensor_parallel(ctx))


def _tensor_parallel(ctx: JobContext) -> int:
    """`run { parallel { tensor } }`, except under LoRA: its adapters wrap the projections
    that tensor parallelism would split, so a LoRA job stays data parallel on every rank."""
    degree = dist.tensor_degree(ctx, adapters=bool(ctx.config.get("lora")))
    asked = dist.tensor_degree(ctx)
    if degree != asked and dist.wanted(ctx) * dist.nodes(ctx) > 1:  # said once, before torchrun
        ctx.log.info("%s: LoRA adapters wrap the projections tensor parallelism would split: this job "
                     "runs data parallel on every rank, not in groups of %d", ctx.job_id, asked)
    return degree


def _groups(model: Llama, lr: float) -> list[tuple[list[torch.nn.Parameter], float]]:
    """What a policy trains: every weight, or with LoRA the adapters (the base is frozen)."""
    return [([p for p in model.parameters() if p.requires_grad], lr)]


def _device_of(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device


def _autocast(ctx: JobContext, device: torch.device) -> AbstractContextManager[Any]:
    """bf16 autocast for training steps (fp32 master weights), as pre-training does."""
    return training_autocast(device, ctx.config.get("precision") or ctx.settings.get("precision", "bf16"))


def _report(ctx: JobContext, title: str, lines: list[str]) -> None:
    (Path(ctx.out) / "report.md").write_text(f"### {title}\n\n" + "\n".join(lines) + "\n", encoding="utf-8")


def _save(ctx: JobContext, module: torch.nn.Module, model: Llama, steps: int,
          prefix: str = "") -> dict[str, torch.Tensor]:
    """Save `model` (the weights of `module` under `prefix`) as a checkpoint with a copy of
    its tokenizer, so `herd chat` needs nothing else. LoRA adapters are folded into their
    weights, so the checkpoint is an ordinary model. Under torch.distributed every rank
    joins the gathering and rank 0 writes. Returns `module`'s full state (empty off rank 0)."""
    state = dist.full_model_state(module)  # on the CPU when gathered
    if not dist.is_main():
        return state
    state = {k: v.detach().cpu() for k, v in state.items()}  # merging needs no device memory
    lora = ctx.config.get("lora")
    if lora and lora.get("quantize") == "nf4":
        dtype = next(v.dtype for k, v in state.items() if k.endswith("tok_embeddings.weight"))
        state = NF4.dequantize_state(state, model, dtype, prefix)
    if lora:
        state = LORA.merged_state(state, lora)
    tok_dir = Path(ctx.inputs["tokenizer"])
    write_checkpoint({k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)},
                     model.config, ctx.out, step=steps, tokenizer_id=tok_dir.name,
                     fingerprint=ctx.fingerprint or None, extra={"stage": ctx.kind, "job": ctx.job_id})
    for name in (MODEL_FILE, META_FILE):
        shutil.copyfile(tok_dir / name, Path(ctx.out) / name)
    return state


def post_schedule(cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """The job's LR schedule relative to its peak (each parameter group scales it), in the
    pre-training schedules' terms (`runtime.train.schedule`), once the step count is known.
    Without a `schedule`: 10% warmup, then cosine to 10% of the peak. With one (as the
    compiler resolves it): its kind, warmup steps or share, floor and decay share."""
    spec = cfg.get("schedule")
    if not spec:
        return {"kind": "cosine", "peak_lr": 1.0, "min_lr": 0.1, "warmup_steps": max(1, steps // 10),
                "total_steps": steps}
    fraction = spec.get("warmup_fraction")
    warmup = round(float(fraction) * steps) if fraction is not None else int(spec.get("warmup_steps", 0))
    return {"kind": spec.get("kind", "cosine"), "peak_lr": 1.0, "min_lr": float(spec.get("min_ratio", 0.1)),
            "warmup_steps": min(warmup, steps), "total_steps": steps,
            "decay_fraction": float(spec.get("decay_fraction", 0.2))}


def describe_schedule(schedule: dict[str, Any]) -> str:
    """`warmup 40 steps then cosine to 10%` for reports."""
    return (f"warmup {schedule['warmup_steps']} steps then {schedule['kind']} to "
            f"{schedule['min_lr']:.0%} of the peak")


# --- the shared, resumable training loop ------------------------------------------------


def batch_indices(n: int, batch: int, step: int, seed: int) -> list[int]:
    """The examples of `step`: a fresh seeded permutation per epoch, so any step's batch is
    known without replaying earlier ones (what makes a resumed run identical)."""
    out: list[int] = []
    pos = step * batch
    while len(out) < batch:
        epoch, offset = divmod(pos, n)
        order = list(range(n))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        take = order[offset : offset + batch - len(out)]
        out += take
        pos += len(take)
    return out


class StepOut(NamedTuple):
    loss: torch.Tensor  # the mean over this rank's part of the batch
    info: dict[str, torch.Tensor]  # more means (reward accuracy, ...; detached, 0-d), logged beside the loss
    weight: float = 1.0  # what the means are over (target tokens, pairs): ranks combine by it


StepFn = Callable[[int, list[int]], StepOut]
#: measures the held-out split (no gradients, the module in eval mode): {"val_loss": ..., ...}
Heldout = Callable[[], dict[str, float]]

#: steps between saved training states when a config has no `checkpoint_every` (the schema's default)
DEFAULT_CHECKPOINT_EVERY = 50
#: held-out records a training job measures while it trains (the first ones of the val split)
HELDOUT_RECORDS = 200


class LoopResult(NamedTuple):
    steps: int
    history: list[dict[str, float]]  # per step: {"loss", **info}
    heldout: list[dict[str, float]]  # {"step": steps done, "val_loss", ...}, from step 0 to the end


def batch_size(cfg: dict[str, Any]) -> int:
    """Examples per step (the compiler always sets `batch`; 16 for a hand-made config)."""
    return int(cfg.get("batch", 16))


def eval_steps(cfg: dict[str, Any], steps: int) -> int:
    """Steps between held-out measurements: `eval_every`, or ten measurements per job."""
    return int(cfg.get("eval_every") or max(1, steps // 10))


def train_loop(ctx: JobContext, module: torch.nn.Module,
               groups: list[tuple[list[torch.nn.Parameter], float]], n_examples: int,
               step_fn: StepFn, heldout: Heldout | None = None) -> LoopResult:
    """AdamW on `post_schedule`, gradient clipping, metrics and progress; state is saved to
    `ctx.work` every `checkpoint_every` steps and a killed job resumes from it exactly.
    `heldout`, when given, is measured before the first step, every `eval_every` steps and
    after the last, as `val_*` metrics beside the training loss.

    Under torch.distributed (`module` sharded by `_shard`) each rank trains on its own
    contiguous slice of every batch, and the losses are weighed so that the gradient FSDP
    averages is the whole batch's, as one process computes it (`_batch_share`); the ranks
    share a held-out measurement's batches out (`dist.sum_shared`)."""
    cfg = ctx.config
    batch = batch_size(cfg)
    local, lo = batch // dist.data_world(), dist.data_rank() * (batch // dist.data_world())
    names = _param_names(module, groups)
    steps = int(cfg.get("steps") or max(1, round(float(cfg.get("epochs", 1.0)) * n_examples / batch)))
    schedule = post_schedule(cfg, steps)
    every = int(cfg.get("checkpoint_every", DEFAULT_CHECKPOINT_EVERY))  # >= 1: the schema checks
    measure_every = eval_steps(cfg, steps)
    opt = torch.optim.AdamW([{"params": p, "lr": lr} for p, lr in groups], betas=(0.9, 0.95),
                            weight_decay=0.0)
    history: list[dict[str, float]] = []
    measured: list[dict[str, float]] = []
    start = 0
    autocast = _autocast(ctx, _device_of(module))

    def measure(done: int) -> None:
        if heldout is None:
            return
        module.eval()
        with torch.no_grad(), autocast:
            row = {"step": done, **heldout()}
        module.train()
        measured.append(row)
        ctx.metric(stage=ctx.kind, **row)
        ctx.progress.set(ctx.progress.done, val=round(row["val_loss"], 4))

    restored = resume.load(Path(ctx.work), module, opt, ctx.log, names)
    if restored is not None:
        start, history, measured = restored
        ctx.rewind_metrics(start - 1)  # steps from `start` on were logged by the stopped attempt
        for row in measured:
            if row["step"] >= start:  # measured after step start-1, just before the save
                ctx.metric(stage=ctx.kind, **row)
        ctx.log.info("%s: resuming at step %d of %d", ctx.job_id, start, steps)
    elif any(Path(ctx.work).iterdir()):
        ctx.rewind_metrics(None)  # a damaged state was set aside: the curve starts over too
    module.train()
    ctx.progress.start(steps, "steps")
    ctx.progress.set(start)
    if start == 0:
        measure(0)
    for step in range(start, steps):
        scale = lr_at(step, schedule)
        for g, (_, lr) in zip(opt.param_groups, groups, strict=True):
            g["lr"] = lr * scale
        with autocast:
            out = step_fn(step, batch_indices(n_examples, batch, step, ctx.seed)[lo : lo + local])
        opt.zero_grad(set_to_none=True)
        share = _batch_share(out)
        (out.loss * (share * dist.world()) if share != 1.0 else out.loss).backward()
        norm = dist.clip_grad_norm([p for p in module.parameters() if p.requires_grad], 1.0)
        loss, info, norm_number = _step_values(out, share, norm)
        check_finite(ctx, step + 1, loss, norm_number)
        opt.step()
        history.append({"loss": loss, **info})
        ctx.metric(stage=ctx.kind, step=step, lr=opt.param_groups[0]["lr"], **history[-1])
        ctx.progress.advance(1, loss=round(history[-1]["loss"], 4))
        if (step + 1) % measure_every == 0 or step + 1 == steps:
            measure(step + 1)
        if (step + 1) % every == 0 and step + 1 < steps:
            resume.save(Path(ctx.work), step + 1, module, opt, history, measured, names)
    return LoopResult(steps, history, measured)


def _param_names(module: torch.nn.Module, groups: list[tuple[list[torch.nn.Parameter], float]]) -> list[str]:
    """The optimizer's parameters' names, in its order: how a sharded state is gathered."""
    by_id = {id(p): name for name, p in module.named_parameters()}
    return [by_id[id(p)] for params, _ in groups for p in params]


def _batch_share(out: StepOut) -> float:
    """This rank's share of the batch's `weight` (1 in one process). Each rank's mean is
    weighed by it, and its gradient by share x ranks, which makes FSDP's average of the
    gradients the whole batch's (exact for SFT's token-weighted loss, where ranks hold
    different numbers of target tokens)."""
    if not dist.active():
        return 1.0
    return out.weight / dist.all_reduce_sum(out.weight)


def _step_values(out: StepOut, share: float, norm: torch.Tensor) -> tuple[float, dict[str, float], float]:
    """(the batch's loss, its info, the gradient norm) as numbers, read after the backward is
    queued: reading the loss before it would leave the device idle while the host then
    launched the backward. They come off the device in one read; ranks then add their
    weighed means in one all-reduce (the norm, a DTensor under FSDP, is already global)."""
    ranks = dist.active()
    parts = (out.loss, *out.info.values()) + (() if ranks else (norm,))
    values = torch.stack([t.detach().to(out.loss.device, torch.float64).reshape(()) for t in parts]).tolist()
    names = ("loss", *out.info)
    if ranks:
        summed = dist.all_reduce_sums({name: value * share for name, value in zip(names, values, strict=True)})
        values = [summed[name] for name in names] + [norm_value(norm)]
    return values[0], dict(zip(out.info, values[1:-1], strict=True)), values[-1]


def curve_lines(ctx: JobContext, result: LoopResult, label: str = "held-out loss") -> list[str]:
    """The report's held-out line and `plots/loss.png`: the training loss of every step
    beside the held-out measurements."""
    if not result.history:
        return []
    series = {"train": (list(range(len(result.history))), [h["loss"] for h in result.history])}
    if result.heldout:
        series[label] = ([row["step"] for row in result.heldout], [row["val_loss"] for row in result.heldout])
    line_plot(Path(ctx.out) / "plots" / "loss.png", series, f"{ctx.job_id} loss", "step", "loss (nats)")
    return [*heldout_lines(result.heldout, label=label), "", "![loss](plots/loss.png)"]


def heldout_lines(measured: list[dict[str, float]], key: str = "val_loss",
                  label: str = "held-out loss") -> list[str]:
    """A report line: first -> last, and the best step when it is not the last (overfitting)."""
    if not measured:
        return []
    first, last = measured[0], measured[-1]
    best = min(measured, key=lambda row: row[key])
    line = f"- {label} {first[key]:.3f} -> {last[key]:.3f}"
    if best is not last and last[key] > best[key] + 0.01 * abs(best[key]):
        line += (f" (lowest {best[key]:.3f} at step {best['step']:.0f}, then rising: the later "
                 "steps overfit; fewer steps or a lower lr may generalise better)")
    return [line]


def _mean(history: list[dict[str, float]], key: str, last: bool) -> float:
    part = history[-max(1, len(history) // 10):] if last else history[: max(1, len(history) // 10)]
    return sum(h[key] for h in part) / len(part)


# --- data.dataset ---------------------------------------------------------------------


@register("data.dataset")
def data_dataset(ctx: JobContext) -> None:
    cfg = ctx.config
    fmt = cfg.get("format", "messages")
    if fmt not in D.FORMATS:
        raise JobFailed(f"{ctx.job_id}: format must be one of {', '.join(D.FORMATS)}, not {fmt!r}")
    val_fraction = float(cfg.get("val_fraction", 0.1))
    bad: list[str] = []
    seen = 0
    held_out_only = fmt in D.HELD_OUT_ONLY  # a benchmark: every record held out, val_fraction unused
    if held_out_only and cfg.get("generate"):
        raise JobFailed(f"{ctx.job_id}: a {fmt} dataset is read from a file (path = ...); generate "
                        "makes tasks (format = tasks)")
    if cfg.get("generate"):
        gen = cfg["generate"]
        try:
            tasks = T.generate_tasks(list(gen.get("kinds", T.KINDS)), int(gen.get("count", 1000)),
                                     int(gen.get("difficulty", 1)), int(gen.get("seed", ctx.seed)))
        except ValueError as e:
            raise JobFailed(f"{ctx.job_id}: {e}") from None
        views, verifier, seen = D.from_tasks(tasks), "tasks", len(tasks)
    else:
        path = Path(cfg.get("path", ""))
        if not path.is_file():
            raise JobFailed(f"{ctx.job_id}: dataset file {str(path)!r} not found")
        external.record(ctx.out, external.snapshot([], [path]))  # rebuilt when the file changes
        parse_as = "prompts" if fmt == "tasks" else fmt
        records, bad = D.read_choices(path) if fmt == "choices" else D.read_jsonl(path, parse_as)
        seen = len(records) + len(bad)
        if not seen:
            raise JobFailed(f"{ctx.job_id}: {path} has no records (the file is empty or blank); "
                            f"hint: one JSON object per line in the {fmt!r} format "
                            "(see docs/posttraining.md)")
        max_bad = float(cfg.get("max_bad_fraction", 0.01))
        if not records or len(bad) / max(1, seen) > max_bad:
            listing = "\n  ".join(bad[:20])
            raise JobFailed(f"{ctx.job_id}: {len(bad)} of {seen} records are invalid "
                            f"(max_bad_fraction {max_bad:g}):\n  {listing}")
        if bad:  # in the run's output, as a source's are, not only in the report
            ctx.log.warning("%s", skipped_warning(bad, len(bad), max_bad))
        views = D.derive(parse_as, records)
        verifier = "tasks" if fmt == "tasks" else ("exact" if views["prompts"] and all(
            "answer" in r for r in views["prompts"]) else None)
    meta = D.write_dataset(Path(ctx.out), views, 1.0 if held_out_only else val_fraction, ctx.seed,
                           {"format": fmt, "verifier": verifier, "records": seen,
                            "bad_records": len(bad), "bad_samples": bad[:20]})
    lines = [f"- format `{fmt}`, verifier `{verifier}`, {seen:,} records"]
    if fmt == "choices":
        lines = [f"- format `choices` (a benchmark: every question held out), {seen:,} records"]
        lines += _choices_summary(views["choices"])
    lines += [f"- {k}: {v:,}" for k, v in meta["counts"].items() if v]
    if meta.get("duplicates") and held_out_only:
        lines += [f"- {meta['duplicates']:,} duplicated question(s): each copy is scored"]
    elif meta.get("duplicates"):
        lines += [f"- {meta['duplicates']:,} duplicated record(s), kept in the same split as their "
                  "first copy"]
    if bad:
        lines += [f"- **{len(bad)} invalid record(s) skipped**:"] + [f"  - `{b}`" for b in bad[:5]]
    _report(ctx, "Dataset", lines)


def _choices_summary(records: list[dict[str, Any]]) -> list[str]:
    """Report lines on a multiple-choice benchmark: choices per question and subjects."""
    sizes = sorted({len(r["choices"]) for r in records})
    lines = [f"- {len(records):,} questions with " + (f"{sizes[0]} choices each" if len(sizes) == 1
                                                      else f"{sizes[0]} to {sizes[-1]} choices")]
    subjects = {r["subject"] for r in records if "subject" in r}
    if subjects:
        lines += [f"- {len(subjects)} subject(s): " + ", ".join(sorted(subjects)[:10])
                  + (", ..." if len(subjects) > 10 else "")]
    return lines


# --- eval.tasks -----------------------------------------------------------------------


def checkable(meta: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Can the dataset's verifier judge a response to `rec`? (Generated tasks always can;
    a JSONL record only with an `answer`.)"""
    return (D.verifier(meta) or "exact") == "tasks" or "answer" in rec


def _cell(text: str) -> str:
    """Text for a markdown table cell in backticks: a `|`, newline or backtick in a model's
    response would otherwise break the table."""
    return text.replace("`", "'").replace("|", "\\|").replace("\n", "⏎")


def check(meta: dict[str, Any], rec: dict[str, Any], response: str) -> bool:
    """Verify one response with the dataset's verifier."""
    kind = D.verifier(meta) or "exact"
    if kind == "exact" and "answer" not in rec:
        return False
    return T.VERIFIERS[kind](rec, response)


def sample(model: Llama, tok: Tokenizer, prompts: list[dict[str, Any]], *, k: int = 1,
           temperature: float = 0.0, top_p: float = 1.0, max_new_tokens: int = 32,
           seed: int = 0, batch: int = 64) -> list[list[str]]:
    """k completions per prompt (chat format, stopping at <|eot_id|>), batched."""
    encoded = [encode_prompt(tok, p["prompt"]) for p in prompts for _ in range(k)]
    for j, ids in enumerate(encoded[::k]):  # generation cannot start past the context
        if len(ids) >= model.args.max_context:
            raise JobFailed(f"prompt {j + 1} of {len(prompts)} is {len(ids):,} tokens in the chat format; the "
                            f"model's context is {model.args.max_context:,}; hint: shorten or drop that record")
    gen = torch.Generator(device=_device_of(model)).manual_seed(seed)
    texts: list[str] = []
    model.eval()
    for i in range(0, len(encoded), batch):
        outs = generate(model, encoded[i : i + batch], max_new_tokens=max_new_tokens,
                        temperature=temperature, top_p=top_p, stop_tokens=[tok.eot_id],
                        generator=gen)
        # A model's vocabulary may be padded past the tokenizer's: those ids decode to nothing.
        texts += [tok.decode([t for t in o.tokens if t < tok.n_vocab]) for o in outs]
    return [texts[j * k : (j + 1) * k] for j in range(len(prompts))]


@register("eval.tasks")
def eval_tasks(ctx: JobContext) -> None:
    """Greedy accuracy on held-out prompts. Under `--nproc N` the ranks answer every N-th
    batch of 64 each (`by_rank`): the same answers as one process."""
    if dist.relaunch(ctx, [], "prompts"):
        return
    model, tok, meta = _load(ctx)
    params = ctx.config.get("params") or {}
    held_out = D.load(ctx.inputs["dataset"], "val", "prompts")
    if not held_out:
        raise JobFailed(f"{ctx.job_id}: the dataset has no held-out prompts to evaluate; hint: "
                        "raise its val_fraction or add records")
    # A prompt with nothing to check against would count as wrong: 0% that means nothing.
    prompts = [r for r in held_out if checkable(meta, r)][: int(params.get("count", 200))]
    skipped = sum(1 for r in held_out if not checkable(meta, r))
    if not prompts:
        raise JobFailed(f"{ctx.job_id}: none of the dataset's {len(held_out)} held-out prompts has "
                        "an answer to check; hint: give records an \"answer\" (format = prompts) or "
                        "evaluate on a dataset with answers: eval held { kind = tasks  data = NAME }")
    ctx.progress.start(len(prompts), "prompts")
    max_new = int(params.get("max_new_tokens", 32))
    answered = by_rank(ctx, prompts, 64, lambda start, chunk: sample(model, tok, chunk, max_new_tokens=max_new))
    results = [answers for part in answered for answers in part]
    if not dist.is_main():
        return
    per_kind: dict[str, list[int]] = {}
    examples = []
    for rec, (resp,) in zip(prompts, results, strict=True):
        ok = check(meta, rec, resp)
        per_kind.setdefault(rec.get("kind", "all"), []).append(int(ok))
        if len(examples) < 5:
            examples.append((rec["prompt_text"], resp, ok))
    correct = sum(sum(v) for v in per_kind.values())
    accuracy = correct / len(prompts)
    out = {"accuracy": accuracy, "correct": correct, "count": len(prompts),
           "per_kind": {k: sum(v) / len(v) for k, v in sorted(per_kind.items())},
           "skipped_without_answer": skipped}
    write_json(Path(ctx.out) / "eval.json", out)
    ctx.metric(stage="eval.tasks", accuracy=accuracy)
    note = f" ({skipped} without an answer skipped)" if skipped else ""
    lines = [f"Greedy accuracy on {len(prompts)} held-out prompts{note}: **{accuracy:.1%}**", "",
             "| kind | accuracy |", "|---|---|"]
    lines += [f"| {k} | {v:.1%} |" for k, v in out["per_kind"].items()]
    lines += ["", "| prompt | response | correct |", "|---|---|---|"]
    lines += [f"| `{_cell(p)}` | `{_cell(r)}` | {'yes' if ok else 'no'} |" for p, r, ok in examples]
    _report(ctx, "Task accuracy", lines)


# --- post.sft -------------------------------------------------------------------------


def sft_examples(tok: Tokenizer, records: list[dict[str, Any]]) -> list[tuple[list[int], list[int]]]:
    return [shifted(encode_dialog(tok, r["messages"])) for r in records]


def fit_context(examples: list[tuple[list[int], list[int]]], context: int
                ) -> tuple[list[tuple[list[int], list[int]]], int, int]:
    """(trainable examples, truncated, dropped): a conversation longer than the context is cut
    to it (packing would do so anyway) and dropped when the cut leaves no assistant token to
    train on — a batch of only such rows has a loss of 0/0 = NaN, which would turn every
    weight into NaN without an error."""
    kept, truncated, dropped = [], 0, 0
    for inp, tgt in examples:
        if len(inp) > context:
            truncated += 1
            inp, tgt = inp[:context], tgt[:context]
        if all(t == IGNORE for t in tgt):
            dropped += 1
            continue
        kept.append((inp, tgt))
    return kept, truncated, dropped


@register("post.sft")
def post_sft(ctx: JobContext) -> None:
    cfg = ctx.config
    if dist.relaunch(ctx, [batch_size(cfg)], "rows", _tensor_parallel(ctx)):
        return
    model, tok, _ = _load(ctx)
    records = D.load(ctx.inputs["dataset"], "train", "sft")
    if "samples" in ctx.inputs:
        records += D.load(ctx.inputs["samples"], "train", "sft")
    if not records:
        why = ""
        if "samples" in ctx.inputs:
            why = (" and rejection sampling accepted no sample; hint: raise its k, lower the task "
                   "difficulty, or add SFT conversations (format = messages) to train on")
        raise JobFailed(f"{ctx.job_id}: no SFT conversations in the dataset{why}")
    context = int(cfg.get("context", model.args.max_context))
    examples, truncated, dropped = fit_context(sft_examples(tok, records), context)
    if truncated:
        ctx.log.warning("%s: %d of %d conversations are longer than the context (%d tokens) and "
                        "were cut; %d lost every assistant token and were dropped", ctx.job_id,
                        truncated, len(records), context, dropped)
    if not examples:
        raise JobFailed(f"{ctx.job_id}: all {len(records)} SFT conversations are longer than the "
                        f"context ({context} tokens) before their first assistant token; hint: "
                        "shorten the prompts or train a model with a longer context")
    rows = P.pack(examples, context)
    lr = float(cfg.get("lr", 1e-4))
    t0 = time.perf_counter()

    dev = _device_of(model)

    def step_fn(step: int, idx: list[int]) -> StepOut:
        tokens, targets, docs = (t.to(dev) for t in P.pad_rows([rows[i] for i in idx]))
        weight = float((targets != IGNORE).sum())  # the loss is the mean over these
        if model.args.document_mask:
            return StepOut(model(tokens, docs, targets), {}, weight)
        # packing is herd's, not the model's: conversations stay apart even in a model
        # pre-trained without a document mask
        return StepOut(model(tokens, docs, targets, positions=document_positions(docs),
                             mask=document_mask(docs, model.attention_backend,
                                                model.args.head_dim)), {}, weight)

    adapter_lines = _adapt(ctx, model)
    _shard(ctx, model, model)
    result = train_loop(ctx, model, _groups(model, lr), len(rows), step_fn,
                        sft_heldout(ctx, tok, model, context))
    steps, history = result.steps, result.history
    _save(ctx, model, model, steps)
    first, last = _mean(history, "loss", False), _mean(history, "loss", True)
    write_json(Path(ctx.out) / "train.json", {"steps": steps, "conversations": len(records),
                                              "truncated": truncated, "dropped_too_long": dropped,
                                              "rows": len(rows), "loss_first": first, "loss_last": last,
                                              "heldout": result.heldout})
    cut = (f" ({truncated} cut to the context, {dropped} of them dropped: no assistant token "
           "left)" if truncated else "")
    _report(ctx, "SFT", [f"- {len(records) - dropped:,} conversations packed into {len(rows):,} rows of "
                         f"<= {context} tokens{cut}", f"- {steps} steps, peak lr {lr:g}, "
                         + describe_schedule(post_schedule(cfg, steps)),
                         *adapter_lines,
                         f"- masked loss {first:.3f} -> {last:.3f} "
                         f"({time.perf_counter() - t0:.1f} s)",
                         *curve_lines(ctx, result, "held-out masked loss")])


def sft_heldout(ctx: JobContext, tok: Tokenizer, model: Llama, context: int) -> Heldout | None:
    """The masked loss SFT trains on, over the dataset's first held-out conversations
    (token-weighted, as the training loss), or None when the dataset holds none out."""
    records = D.load(ctx.inputs["dataset"], "val", "sft")[:HELDOUT_RECORDS]
    examples, _, _ = fit_context(sft_examples(tok, records), context)
    if not examples:
        ctx.log.info("%s: the dataset holds out no conversations: no held-out loss", ctx.job_id)
        return None

    def batch_sums(batch: list[int]) -> dict[str, float]:
        scored = score_batch(model, examples, batch)
        return {"logp": sum(lp for lp, _ in scored), "tokens": sum(n for _, n in scored)}

    def measure() -> dict[str, float]:
        sums = dist.sum_shared(plan_batches(model, examples), batch_sums)
        return {"val_loss": -sums["logp"] / max(1.0, sums["tokens"])}

    return measure


# --- DPO ------------------------------------------------------------------------------


def preference_batch(tok: Tokenizer, recs: list[dict[str, Any]], mask_formatting: bool,
                     device: torch.device | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen tokens, chosen targets, rejected tokens, rejected targets), right-padded."""
    seqs: list[tuple[list[int], list[int]]] = []
    for side in ("chosen", "rejected"):
        for r in recs:
            seqs.append(shifted(encode_completion(tok, r["prompt"], r[side]), mask_formatting))
    tokens, _ = P.pad_sequences([s[0] for s in seqs])
    targets, _ = P.pad_sequences([s[1] for s in seqs], fill=-100)
    if device is not None:
        tokens, targets = tokens.to(device), targets.to(device)
    n = len(recs)
    return tokens[:n], targets[:n], tokens[n:], targets[n:]


def fitting_pairs(tok: Tokenizer, prefs: list[dict[str, Any]], context: int
                  ) -> tuple[list[dict[str, Any]], int]:
    """(pairs whose chosen and rejected conversations both fit the context, number left out).
    A longer one would run the model past the positions it was trained on (RoPE extrapolates
    without an error) and cutting it would cut the responses being compared. The reference
    and DPO jobs select with the same rule, so their pairs line up index for index."""
    kept = [r for r in prefs
            if max(len(encode_completion(tok, r["prompt"], r[side]).tokens)
                   for side in ("chosen", "rejected")) <= context]
    return kept, len(prefs) - len(kept)


def _pairs(ctx: JobContext, tok: Tokenizer, model: Llama, split: str = "train"
           ) -> list[dict[str, Any]]:
    """The dataset's preference pairs of `split` that fit the model's context, or a JobFailed."""
    prefs = D.load(ctx.inputs["dataset"], split, "preferences")
    if not prefs:
        if split != "train":
            return []
        raise JobFailed(f"{ctx.job_id}: the dataset has no preference pairs")
    context = int(model.args.max_context)
    kept, left_out = fitting_pairs(tok, prefs, context)
    if left_out:
        ctx.log.warning("%s: %d of %d %s pairs are longer than the context (%d tokens) and are "
                        "left out", ctx.job_id, left_out, len(prefs), split, context)
    if not kept and split == "train":
        raise JobFailed(f"{ctx.job_id}: all {len(prefs)} preference pairs are longer than the "
                        f"model's context ({context} tokens); hint: shorten them or train a model "
                        "with a longer context")
    return kept


def _mask_flag(ctx: JobContext) -> bool:
    mask = ctx.config.get("mask", "formatting_tokens")
    if mask not in ("formatting_tokens", "none"):
        raise JobFailed(f"{ctx.job_id}: mask must be 'formatting_tokens' or 'none', not {mask!r}")
    return mask == "formatting_tokens"


REFERENCE = "reference.safetensors"
REFERENCE_META = "herd.reference"  # the safetensors metadata key of what a reference was computed under


def heldout_pairs(ctx: JobContext, tok: Tokenizer, model: Llama) -> list[dict[str, Any]]:
    """The held-out pairs DPO and the reward model measure while they train: the first
    `HELDOUT_RECORDS` of the val split that fit the context (the same list in the reference
    job and in DPO, so their log-probs line up)."""
    return _pairs(ctx, tok, model, "val")[:HELDOUT_RECORDS]


def by_rank(ctx: JobContext, items: list[Any], size: int, work: Callable[[int, list[Any]], Any],
            tally: tuple[str, Callable[[Any], int]] | None = None) -> list[Any]:
    """`work(start, items[start:start + size])` for every chunk of `items`, in order. Under
    `herd run --nproc N` the ranks, each holding the whole model, take every N-th chunk and
    the results are gathered: a chunk is computed exactly as one process computes it (same
    batch, same seed), so the output does not depend on the number of ranks.

    `tally = (name, count)` shows a running total of `count(result)` on the progress bar
    (`kept=`): the ranks add theirs up after each round of N chunks (one small collective)."""
    starts = list(range(0, len(items), size))
    rank, world = dist.rank(), dist.world()
    mine: dict[int, Any] = {}
    total = 0
    for first in range(0, len(starts), world):
        counted = 0
        if first + rank < len(starts):
            start = starts[first + rank]
            mine[start] = work(start, items[start : start + size])
            counted = tally[1](mine[start]) if tally is not None else 0
        info: dict[str, int] = {}
        if tally is not None:
            total += round(dist.all_reduce_sum(float(counted)))
            info[tally[0]] = total
        last = starts[min(first + world, len(starts)) - 1]
        ctx.progress.advance(len(items[starts[first] : last + size]), **info)
    done: dict[int, Any] = {}
    for part in dist.gather_objects(mine):
        done.update(part)
    return [done[start] for start in starts]


def _reference_logprobs(ctx: JobContext, model: Llama, tok: Tokenizer, prefs: list[dict[str, Any]],
                        masked: bool) -> tuple[torch.Tensor, torch.Tensor]:
    def score(start: int, chunk: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        ct, cy, rt, ry = preference_batch(tok, chunk, masked, _device_of(model))
        return (P.sequence_logprobs(model, ct, cy)[0].float().cpu(),
                P.sequence_logprobs(model, rt, ry)[0].float().cpu())

    with torch.no_grad():
        scored = by_rank(ctx, prefs, 32, score)
    chosen, rejected = [torch.zeros(0), *(c for c, _ in scored)], [torch.zeros(0), *(r for _, r in scored)]
    return torch.cat(chosen).contiguous(), torch.cat(rejected).contiguous()


@register("post.dpo_reference")
def post_dpo_reference(ctx: JobContext) -> None:
    """Reference log-probs once, so DPO never holds a second model: of the training pairs
    and of the held-out pairs DPO measures as it trains. Under `--nproc N` the ranks score
    every N-th batch of pairs each (`by_rank`)."""
    if dist.relaunch(ctx, [], "pairs"):
        return
    model, tok, _ = _load(ctx)
    prefs = _pairs(ctx, tok, model)
    val = heldout_pairs(ctx, tok, model)
    masked = _mask_flag(ctx)
    model.eval()
    ctx.progress.start(len(prefs) + len(val), "pairs")
    chosen, rejected = _reference_logprobs(ctx, model, tok, prefs, masked)
    val_chosen, val_rejected = _reference_logprobs(ctx, model, tok, val, masked)
    if not dist.is_main():
        return
    save_file({"chosen": chosen, "rejected": rejected, "val_chosen": val_chosen, "val_rejected": val_rejected},
              str(Path(ctx.out) / REFERENCE),
              # one key (JSON): safetensors writes several in hash order, so the bytes would vary
              metadata={REFERENCE_META: json.dumps({"mask": ctx.config.get("mask", "formatting_tokens"),
                                                    "pairs": len(prefs), "val_pairs": len(val),
                                                    "checkpoint": Path(ctx.inputs["checkpoint"]).name},
                                                   sort_keys=True)})
    _report(ctx, "DPO reference", [f"- reference log-probs of {len(prefs):,} pairs and {len(val):,} "
                                   f"held-out pairs (mask `{ctx.config.get('mask', 'formatting_tokens')}`)"])


def check_reference(ctx: JobContext, path: Path) -> None:
    """Refuse a reference computed under another mask or from another model than the policy
    DPO starts from: the implicit rewards β·(π − r) would then measure the wrong thing and
    training would go on without an error. (References written before these fields were
    recorded are not checked for them.)"""
    if not path.is_file():
        raise JobFailed(f"{ctx.job_id}: {path} not found; hint: the 'reference' input must be the "
                        "output of a post.dpo_reference job")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if REFERENCE_META in meta:  # older references kept each field as its own key
        meta = json.loads(meta[REFERENCE_META])
    mask = ctx.config.get("mask", "formatting_tokens")
    if meta.get("mask", mask) != mask:
        raise JobFailed(f"{ctx.job_id}: the reference log-probs were computed with mask "
                        f"{meta['mask']!r} but DPO uses {mask!r}; hint: give both the same mask")
    start = Path(ctx.inputs["checkpoint"]).name
    if meta.get("checkpoint", start) != start:
        raise JobFailed(f"{ctx.job_id}: the reference log-probs come from checkpoint "
                        f"{meta['checkpoint']!r} but DPO starts from {start!r}; hint: the "
                        "reference model must be the policy DPO starts from")


@register("post.dpo")
def post_dpo(ctx: JobContext) -> None:
    cfg = ctx.config
    if dist.relaunch(ctx, [batch_size(cfg)], "pairs", _tensor_parallel(ctx)):
        return
    ctx.need("reference")
    model, tok, _ = _load(ctx)
    prefs = _pairs(ctx, tok, model)
    dev = _device_of(model)
    ref_path = Path(ctx.inputs["reference"]) / REFERENCE
    check_reference(ctx, ref_path)
    ref = load_file(str(ref_path), device=str(dev))
    if len(ref["chosen"]) != len(prefs):
        raise JobFailed(f"{ctx.job_id}: the reference has {len(ref['chosen'])} pairs, the dataset "
                        f"{len(prefs)}; hint: the reference must come from the same dataset")
    masked = _mask_flag(ctx)
    beta, nll = float(cfg.get("beta", 0.1)), float(cfg.get("nll", 0.2))
    lr = float(cfg.get("lr", 5e-5))

    def dpo_step(pairs: list[dict[str, Any]], ref_chosen: torch.Tensor, ref_rejected: torch.Tensor
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ct, cy, rt, ry = preference_batch(tok, pairs, masked, dev)
        pc, nc = P.sequence_logprobs(model, ct, cy)
        pr, _ = P.sequence_logprobs(model, rt, ry)
        return P.dpo_loss(pc, pr, ref_chosen, ref_rejected, nc, beta, nll)

    def step_fn(step: int, idx: list[int]) -> StepOut:
        loss, info = dpo_step([prefs[i] for i in idx], ref["chosen"][idx], ref["rejected"][idx])
        return StepOut(loss, info, float(len(idx)))

    def chunk_sums(start: int) -> dict[str, float]:
        part = slice(start, start + 32)
        loss, info = dpo_step(val[part], ref["val_chosen"][part], ref["val_rejected"][part])
        n = len(val[part])
        values = torch.stack([loss.detach(), info["reward_accuracy"], info["reward_margin"]]).tolist()
        return {key: value * n for key, value in
                zip(("val_loss", "val_reward_accuracy", "val_reward_margin"), values, strict=True)}

    def heldout() -> dict[str, float]:
        """The training loss and the implicit reward's accuracy and margin on held-out pairs
        (the ranks share the pairs out)."""
        return {key: total / len(val) for key, total in dist.sum_shared(range(0, len(val), 32), chunk_sums).items()}

    val = heldout_pairs(ctx, tok, model) if "val_chosen" in ref else []
    if "val_chosen" in ref and len(ref["val_chosen"]) != len(val):
        raise JobFailed(f"{ctx.job_id}: the reference has {len(ref['val_chosen'])} held-out pairs, the "
                        f"dataset {len(val)}; hint: the reference must come from the same dataset")
    adapter_lines = _adapt(ctx, model)
    _shard(ctx, model, model)
    result = train_loop(ctx, model, _groups(model, lr), len(prefs), step_fn, heldout if val else None)
    steps, history = result.steps, result.history
    _save(ctx, model, model, steps)
    summary = {k: _mean(history, k, True) for k in history[0]}
    write_json(Path(ctx.out) / "train.json", {"steps": steps, "pairs": len(prefs), "final": summary,
                                              "heldout": result.heldout})
    final = result.heldout[-1] if result.heldout else None
    _report(ctx, "DPO", [f"- {len(prefs):,} pairs, {steps} steps, beta {beta:g}, nll {nll:g}, "
                         f"mask `{cfg.get('mask', 'formatting_tokens')}`",
                         *adapter_lines,
                         f"- final reward margin {summary['reward_margin']:.3f}, "
                         f"reward accuracy {summary['reward_accuracy']:.1%}",
                         *([f"- held-out reward accuracy {result.heldout[0]['val_reward_accuracy']:.1%} -> "
                            f"{final['val_reward_accuracy']:.1%} ({len(val)} pairs)"] if final else []),
                         *curve_lines(ctx, result)])


# --- post.reward_model ------------------------------------------------------------------

HEAD = "reward_head.safetensors"


def _pair_tensors(tok: Tokenizer, recs: list[dict[str, Any]], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    chosen = [encode_completion(tok, r["prompt"], r["chosen"]).tokens for r in recs]
    rejected = [encode_completion(tok, r["prompt"], r["rejected"]).tokens for r in recs]
    ct, cl = P.pad_sequences(chosen)
    rt, rl = P.pad_sequences(rejected)
    return ct.to(device), cl.to(device), rt.to(device), rl.to(device)


def pair_outcomes(rm: P.RewardModel, tok: Tokenizer, recs: list[dict[str, Any]]
                  ) -> tuple[float, int]:
    """(accuracy, ties): a reward model that scores everything alike has 0% accuracy, and the
    tie count tells that apart from one that prefers the rejected responses."""
    if not recs:
        return float("nan"), 0
    totals = pair_totals(rm, tok, recs)
    return totals["correct"] / len(recs), round(totals["ties"])


def pair_totals(rm: P.RewardModel, tok: Tokenizer, recs: list[dict[str, Any]]) -> dict[str, float]:
    """Sums over the pairs of the Bradley–Terry loss (`loss`), of the pairs scored in the right
    order (`correct`) and of ties (`ties`), 32 pairs per forward pass; under `--nproc N` the
    ranks share the batches out (`dist.sum_shared`)."""
    def chunk(start: int) -> dict[str, float]:
        ct, cl, rt, rl = _pair_tensors(tok, recs[start : start + 32], _device_of(rm))
        chosen, rejected = rm(ct, cl).float(), rm(rt, rl).float()
        return {"loss": float(P.bradley_terry_loss(chosen, rejected)) * len(chosen),
                "correct": float((chosen > rejected).sum()), "ties": float((chosen == rejected).sum())}

    rm.eval()
    with torch.no_grad():
        return dist.sum_shared(range(0, len(recs), 32), chunk)


def load_reward_model(ctx: JobContext, role: str = "reward_model") -> P.RewardModel:
    rm = P.RewardModel(ctx.load_model(role)).to(ctx.torch_device())
    directory = Path(ctx.inputs[role])
    head = directory / HEAD
    if not head.is_file():
        raise JobFailed(f"{ctx.job_id}: {directory} has no {HEAD}; hint: the 'reward_model' input "
                        "must be the output of a reward-model stage")
    rm.head.load_state_dict(load_file(str(head)))
    return rm


def score_responses(rm: P.RewardModel, tok: Tokenizer, prompt: list[dict[str, str]],
                    responses: list[str]) -> list[float]:
    seqs = [encode_completion(tok, prompt, [{"role": "assistant", "content": r}]).tokens
            for r in responses]
    tokens, lengths = (t.to(_device_of(rm)) for t in P.pad_sequences(seqs))
    rm.eval()
    with torch.no_grad():
        return rm(tokens, lengths).tolist()


@register("post.reward_model")
def post_reward_model(ctx: JobContext) -> None:
    cfg = ctx.config
    if dist.relaunch(ctx, [batch_size(cfg)], "pairs", _tensor_parallel(ctx)):
        return
    model, tok, _ = _load(ctx)
    train = _pairs(ctx, tok, model)
    val = _pairs(ctx, tok, model, "val")
    rm = P.RewardModel(model).to(_device_of(model))
    lr = float(cfg.get("lr", 1e-5))

    def step_fn(step: int, idx: list[int]) -> StepOut:
        ct, cl, rt, rl = _pair_tensors(tok, [train[i] for i in idx], _device_of(rm))
        return StepOut(P.bradley_terry_loss(rm(ct, cl), rm(rt, rl)), {}, float(len(idx)))

    measured_pairs = val[:HELDOUT_RECORDS]

    def heldout() -> dict[str, float]:
        totals = pair_totals(rm, tok, measured_pairs)
        return {"val_loss": totals["loss"] / len(measured_pairs),
                "val_pair_accuracy": totals["correct"] / len(measured_pairs)}

    # The fresh head starts at zero: it gets a larger rate than the pretrained body (or its adapters).
    adapter_lines = _adapt(ctx, model)
    _shard(ctx, rm, model, fp32_units=(rm.head,))
    loop = train_loop(ctx, rm, [*_groups(model, lr), (list(rm.head.parameters()), lr * 100)],
                      len(train), step_fn, heldout if measured_pairs else None)
    steps, history = loop.steps, loop.history
    accuracy, ties = pair_outcomes(rm, tok, val)
    train_accuracy, train_ties = pair_outcomes(rm, tok, train[:256])
    state = _save(ctx, rm, model, steps, prefix="base.")
    if dist.is_main():
        save_file({k.removeprefix("head."): v.detach().cpu().contiguous() for k, v in state.items()
                   if k.startswith("head.")}, str(Path(ctx.out) / HEAD))
    result = {"accuracy": accuracy, "train_accuracy": train_accuracy, "pairs": len(val),
              "ties": ties, "train_ties": train_ties,
              "loss_first": _mean(history, "loss", False), "loss_last": _mean(history, "loss", True),
              "heldout": loop.heldout}
    write_json(Path(ctx.out) / "eval.json", result)
    ctx.metric(stage="post.reward_model", heldout_pair_accuracy=accuracy)
    _report(ctx, f"Reward model `{cfg.get('name', 'rm')}`",
            [f"- Bradley–Terry on {len(train):,} pairs, {steps} steps", *adapter_lines,
             f"- held-out pair accuracy **{accuracy:.1%}** ({len(val)} pairs), "
             f"train {train_accuracy:.1%}",
             *([f"- **{ties} held-out and {train_ties} training pair(s) scored as ties** (counted "
                "as wrong): the reward model does not tell these responses apart"]
               if ties or train_ties else []),
             f"- loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}",
             *curve_lines(ctx, loop)])


# --- post.rejection_sampling ------------------------------------------------------------


def select_best(scores: list[float], verifier: bool) -> int | None:
    """Index of the sample to keep: the best-scoring one; with a verifier, only a correct one."""
    best = max(range(len(scores)), key=lambda i: scores[i])
    if verifier and scores[best] <= 0:
        return None
    return best


@register("post.rejection_sampling")
def post_rejection_sampling(ctx: JobContext) -> None:
    """Best of `k` samples per prompt. Under `--nproc N` the ranks sample every N-th chunk of
    16 prompts each, with the chunk's own seed (`by_rank`): the kept samples are those one
    process keeps, N times faster."""
    cfg = ctx.config
    if dist.relaunch(ctx, [], "prompts"):
        return
    model, tok, meta = _load(ctx)
    scorer = cfg.get("scorer", "verifier")
    k, count = int(cfg.get("k", 4)), int(cfg.get("count", 128))
    prompts = D.load(ctx.inputs["dataset"], "train", "prompts")[:count]
    if not prompts:
        raise JobFailed(f"{ctx.job_id}: the dataset has no prompts to sample from")
    rm = None
    if scorer == "verifier":
        if D.verifier(meta) is None:
            raise JobFailed(f"{ctx.job_id}: scorer 'verifier' needs prompts with answers or "
                            "generated tasks; hint: use a reward model as the scorer")
    else:
        if "reward_model" not in ctx.inputs:
            raise JobFailed(f"{ctx.job_id}: scorer {scorer!r} needs a 'reward_model' input")
        rm = load_reward_model(ctx)
    ctx.progress.start(len(prompts), "prompts")

    def best_of_k(start: int, chunk: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
        """(the chunk's kept conversations, correct samples, verifiable samples)."""
        samples = sample(model, tok, chunk, k=k, temperature=float(cfg.get("temperature", 0.8)),
                         top_p=float(cfg.get("top_p", 0.95)),
                         max_new_tokens=int(cfg.get("max_new_tokens", 64)), seed=ctx.seed + start)
        kept_here: list[dict[str, Any]] = []
        correct_here = verifiable_here = 0
        for rec, responses in zip(chunk, samples, strict=True):
            correct = ([check(meta, rec, r) for r in responses]
                       if D.verifier(meta) is not None else None)
            if correct is not None:
                correct_here += sum(correct)
                verifiable_here += len(correct)
            if rm is None:
                assert correct is not None
                scores = [float(c) for c in correct]
            else:
                scores = score_responses(rm, tok, rec["prompt"], responses)
            best = select_best(scores, verifier=rm is None)
            if best is not None:
                kept_here.append({"messages": rec["prompt"] + [{"role": "assistant",
                                                                "content": responses[best]}]})
        return kept_here, correct_here, verifiable_here

    chunks = by_rank(ctx, prompts, 16, best_of_k, tally=("kept", lambda chunk: len(chunk[0])))
    kept = [conversation for part, _, _ in chunks for conversation in part]
    n_correct, n_verifiable = sum(c[1] for c in chunks), sum(c[2] for c in chunks)
    if not dist.is_main():
        return
    for split_name in ("train", "val"):
        with open(Path(ctx.out) / f"{split_name}.sft.jsonl", "w", encoding="utf-8") as f:
            for r in kept if split_name == "train" else []:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    stats = {"prompts": len(prompts), "k": k, "samples": len(prompts) * k, "scorer": scorer,
             "accepted": len(kept), "acceptance_rate": len(kept) / len(prompts),
             "sample_accuracy": n_correct / n_verifiable if n_verifiable else None}
    write_json(Path(ctx.out) / D.META, {"format": "messages", "verifier": None,
                                         "counts": {"train.sft": len(kept)}, **stats})
    write_json(Path(ctx.out) / "stats.json", stats)
    ctx.metric(stage="post.rejection_sampling", acceptance_rate=stats["acceptance_rate"])
    if not kept:
        ctx.log.warning("%s: no sample was accepted; the next SFT trains on its dataset's "
                        "conversations only", ctx.job_id)
    acc = "" if stats["sample_accuracy"] is None else f", sample accuracy {stats['sample_accuracy']:.1%}"
    _report(ctx, "Rejection sampling",
            [f"- {len(prompts)} prompts x {k} samples, scored by `{scorer}`{acc}",
             f"- kept {len(kept)} ({stats['acceptance_rate']:.1%} of prompts) as new SFT data",
             *(["- **no sample was accepted**: the next SFT trains on its dataset's conversations "
                "only (and fails if it has none)"] if not kept else [])])
