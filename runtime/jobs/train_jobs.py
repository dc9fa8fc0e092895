"""Training job kinds: pre-training, context extension (gated), annealing, checkpoint
averaging, and the evals they are judged by. The loop lives in `runtime.train`."""

from __future__ import annotations

import json
import math
import operator
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runtime.data.token_shards import read_meta as read_tokens_meta
from runtime.data.tokenizer import META_FILE as TOKENIZER_META_FILE
from runtime.data.tokenizer import MODEL_FILE as TOKENIZER_MODEL_FILE
from runtime.data.tokenizer import load_tokenizer
from runtime.jobs.context import JobContext, JobFailed, write_json
from runtime.jobs.registry import register
from runtime.model import Llama, average_checkpoints, from_config
from runtime.model.checkpoint import CheckpointError, load_state, read_meta, write_checkpoint
from runtime.train import dist, report
from runtime.train.evals import filler_tokens, needle, needle_prompt_tokens, unigram_loss, val_loss
from runtime.train.loop import StepHook, Trainer, TrainState, data_sources

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
NEEDLE_DEPTHS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _unigram(ctx: JobContext) -> float:
    sources = data_sources(ctx)
    n_vocab = max(int(read_tokens_meta(p)["n_vocab"]) for p in sources.values())
    weights = ctx.config.get("mix", {}).get("weights") or dict.fromkeys(sources, 1.0)
    return unigram_loss(sources, weights, n_vocab)


def _from_checkpoint(ctx: JobContext) -> Llama:
    """The stage's model (its own config: longer context, RoPE changes) with the previous
    stage's weights."""
    tensors, _ = ctx.read_checkpoint(load_state)
    model = from_config(ctx.config["model"])
    model.load_state_dict(tensors, strict=True)
    return model


def _tokenizer_id(ctx: JobContext) -> str | None:
    """The tokenizer artifact's store name, so `herd generate`/`chat` find it beside the
    checkpoint (runtime/chat.py `find_tokenizer`)."""
    return Path(ctx.inputs["tokenizer"]).name if "tokenizer" in ctx.inputs else None


def _finish(ctx: JobContext, trainer: Trainer, extra: dict[str, Any] | None = None,
            sections: Callable[[], list[str]] | None = None) -> dict[str, Any]:
    """Final validation, the checkpoint into ctx.out (which replaces the directory, hence
    `sections` is called after it), stats and the report fragment."""
    st = trainer.state
    final_val = (st.val["loss"][-1] if st.val["step"] and st.val["step"][-1] == st.step
                 else trainer.validate())
    unigram = _unigram(ctx)
    stats = {"steps": st.step, "tokens": st.tokens, "val_loss": round(final_val, 4),
             "unigram_loss": round(unigram, 4), **throughput(st), **(extra or {})}
    if trainer.world > 1:
        stats["nproc"] = trainer.world
    if dist.tensor() > 1:
        stats["tensor_parallel"] = dist.tensor()
    if trainer.bf16_gather:
        stats["fsdp_param_dtype"] = "bf16"
    if trainer.model.activation_checkpointing:
        stats["activation_checkpointing"] = True
    weights = trainer.export_state()  # a collective under torch.distributed
    if weights is None:  # not rank 0: rank 0 writes the artifact
        return stats
    write_checkpoint(weights, trainer.model_config, ctx.out, step=st.step,
                     tokenizer_id=_tokenizer_id(ctx), fingerprint=ctx.fingerprint or None,
                     extra=stats)
    write_json(Path(ctx.out) / "stats.json", stats)
    lines = (report.loss_section(Path(ctx.out), st, unigram, final_val)
             + report.throughput_section(Path(ctx.out), st, trainer.world)
             + (sections() if sections else []))
    report.write(Path(ctx.out), lines)
    ctx.log.info("%s: %d steps, val loss %.4f (unigram %.4f)", ctx.job_id, st.step, final_val, unigram)
    return stats


def throughput(st: TrainState) -> dict[str, float]:
    """Median tokens/s (and MFU on CUDA) over the run's steps, first step excluded when
    there are others (it pays for warm-up and compilation)."""
    out: dict[str, float] = {}
    for key, digits in (("tokens_per_s", 1), ("mfu", 4)):
        values = st.history.get(key) or []
        values = sorted(values[1:] if len(values) > 1 else values)
        if values:
            out[key] = round(values[len(values) // 2], digits)
    return out


def _distributed(ctx: JobContext) -> bool:
    """Re-run under torchrun for `herd run --nproc N`: True when the ranks did the job."""
    return dist.relaunch(ctx, [int(b["seqs"]) for b in ctx.config.get("batch", [])],
                         tensor_parallel=dist.tensor_degree(ctx))


def run_pretrain(ctx: JobContext, on_step: StepHook | None = None) -> TrainState | None:
    """train.pretrain from a seeded random init; `on_step` lets tests interrupt it. Returns
    None when the job ran in torchrun workers."""
    if _distributed(ctx):
        return None
    model = from_config(ctx.config["model"], seed=ctx.seed)
    trainer = Trainer(ctx, model, ctx.config, on_step=on_step)
    trainer.run(int(ctx.config["steps"]))
    _finish(ctx, trainer)
    return trainer.state


@register("train.pretrain")
def pretrain(ctx: JobContext) -> None:
    run_pretrain(ctx)


# --- context extension ------------------------------------------------------------------


def _needle(ctx: JobContext, model: Llama) -> dict[str, Any] | None:
    """The needle grid at the lengths whose haystack holds the prompt; None when none does."""
    cfg = ctx.config
    sources = data_sources(ctx)
    name = sorted(sources)[0]
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    params = cfg.get("needle", {}) or {}
    lengths = sorted({int(n) for n in params.get("lengths") or ()}
                     or {int(cfg.get("base_context", cfg["context"])), int(cfg["context"])})
    need = needle_prompt_tokens(tok)
    fits = [n for n in lengths if n > need]
    if len(fits) < len(lengths):
        gated = any(rule.get("eval", key) == "needle" for key, rule in (cfg.get("gate") or {}).items())
        if not fits and gated:
            raise JobFailed(f"{ctx.job_id}: the needle gate cannot be measured: the pass-key prompt takes "
                            f"{need} tokens, more than a {max(lengths)}-token haystack holds\nhint: gate on "
                            "short_context_recovery alone at these lengths, or extend to longer contexts")
        ctx.log.warning(f"needle: not measured at {', '.join(map(str, sorted(set(lengths) - set(fits))))} "
                        f"tokens (the pass-key prompt takes {need})")
        if not fits:
            return None
    filler = filler_tokens(sources[name], name, max(fits) * 4, tok.eos_id)
    return needle(model, tok, filler, fits, list(params.get("depths", NEEDLE_DEPTHS)),
                  int(params.get("trials", 4)), ctx.seed)


def _base_loss(ctx: JobContext, model: Llama) -> float:
    """Validation loss at the original context (the short-context recovery measure)."""
    base = int(ctx.config.get("base_context", ctx.config["context"]))
    tokens = int(ctx.config.get("recovery_tokens", 16_384))
    losses = [val_loss(model, p, n, base, tokens)["loss"] for n, p in data_sources(ctx).items()]
    return sum(losses) / len(losses)


def check_gates(gate: dict[str, dict[str, Any]], values: dict[str, float]) -> dict[str, Any]:
    """{name: {value, op, threshold, passed}} for every configured gate; a gate named after a
    spec-defined eval says which measurement it reads in `eval`."""
    out = {}
    for name, rule in gate.items():
        kind = rule.get("eval", name)
        if kind not in values:
            raise JobFailed(f"unknown gate {name!r} (known: {', '.join(sorted(values))})")
        op = rule.get("op", ">=")
        if op not in OPS:
            raise JobFailed(f"gate {name}: unknown op {op!r}")
        value = values[kind]
        out[name] = {"value": value, "op": op, "threshold": float(rule["value"]),
                     "passed": bool(OPS[op](value, float(rule["value"])))}
    return out


def run_extend(ctx: JobContext, on_step: StepHook | None = None) -> dict[str, Any] | None:
    """train.extend: train at the longer context, then gate; failing gates buy extra training
    in chunks up to max_extra x the increment's steps, then the job fails with a gate report."""
    if _distributed(ctx):
        return None
    cfg = ctx.config
    model = _from_checkpoint(ctx)
    before_file = Path(ctx.work) / "before.json"
    measured = before_file.exists()
    dist.barrier()  # every rank decides before rank 0 writes the file
    trainer = Trainer(ctx, model, cfg, on_step=on_step)
    if not measured:
        # measured where `after` will be: on the trainer's device and, under --nproc, through
        # the same sharded (bf16-gathered) weights, so the recovery ratio compares like with
        # like (and a large model is not run on every rank's CPU first)
        if trainer.resumed:
            ctx.log.warning("%s: no short-context loss from before training was kept; measuring "
                            "it on the resumed weights", ctx.job_id)
        loss = _base_loss(ctx, model)
        if dist.is_main():
            tmp = before_file.with_suffix(".tmp")
            write_json(tmp, {"base_loss": loss})
            tmp.replace(before_file)
        before = loss
    else:
        before = json.loads(before_file.read_text())["base_loss"]
    steps = int(cfg["steps"])
    extra = math.floor(float(cfg.get("max_extra", 0.0)) * steps)
    chunk = max(1, math.ceil(extra / 2)) if extra else 0
    target, rounds = steps, []
    while True:
        trainer.run(target)
        after = _base_loss(ctx, model)
        needle_result = _needle(ctx, model)
        values = {"short_context_recovery": math.exp(-(after - before))}
        if needle_result is not None:
            values["needle"] = needle_result["accuracy"]
        gates = check_gates(cfg.get("gate", {}) or {}, values)
        rounds.append({"round": len(rounds), "step": trainer.state.step, "gates": gates,
                       "base_loss_before": before, "base_loss_after": after})
        ctx.metric(step=trainer.state.step, **{f"gate_{k}": v for k, v in values.items()})
        if all(g["passed"] for g in gates.values()):
            break
        if target >= steps + extra:
            failed = [f"{n} = {g['value']:.4f} (needs {g['op']} {g['threshold']})"
                      for n, g in gates.items() if not g["passed"]]
            raise JobFailed(f"{ctx.job_id}: gates failed after {trainer.state.step} steps "
                            f"({trainer.state.step - steps} extra, max_extra {cfg.get('max_extra')}): "
                            + "; ".join(failed))
        target = min(steps + extra, target + chunk)
        ctx.log.info("gates not met; training %d more steps", target - trainer.state.step)
    result = {"rounds": rounds, "needle": needle_result}
    _finish(ctx, trainer, extra={f"gate_{k}": round(v, 4) for k, v in values.items()},
            sections=lambda: [f"Short-context loss at {cfg.get('base_context')} tokens: "
                              f"{before:.4f} before, {after:.4f} after.", ""]
            + report.gate_section(Path(ctx.out), rounds, needle_result))
    if dist.is_main():
        write_json(Path(ctx.out) / "gates.json", result)
    return result


@register("train.extend")
def extend(ctx: JobContext) -> None:
    run_extend(ctx)


# --- annealing and averaging --------------------------------------------------------------


def run_anneal(ctx: JobContext, on_step: StepHook | None = None) -> TrainState | None:
    """train.anneal: continue from the checkpoint with the stage's (linear-to-zero) schedule,
    keeping the last `keep_last` checkpoints as ckpt-NNNNNN/ in the artifact for averaging."""
    if _distributed(ctx):
        return None
    keep = max(1, int(ctx.config.get("keep_last", 1)))
    snaps = Path(ctx.work) / "snapshots"
    model = _from_checkpoint(ctx)
    config = dict(model.config)
    holder: list[Trainer] = []

    def snapshot(step: int, _state: TrainState) -> None:
        # the trainer has just gathered the full weights for its own checkpoint (rank 0)
        weights = holder[0].exported if holder else None
        if weights is None:
            return
        write_checkpoint(weights, config, snaps / f"ckpt-{step:06d}", step=step,
                         tokenizer_id=_tokenizer_id(ctx))
        for old in sorted(snaps.glob("ckpt-*"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)

    trainer = Trainer(ctx, model, ctx.config, on_step=on_step, on_checkpoint=snapshot)
    holder.append(trainer)
    trainer.run(int(ctx.config["steps"]))
    kept = sorted(snaps.glob("ckpt-*"))[-keep:]
    _finish(ctx, trainer, extra={"kept": [p.name for p in kept]},
            sections=lambda: ["Checkpoints kept for averaging: " + ", ".join(p.name for p in kept), ""])
    if trainer.is_main:
        for p in kept:
            shutil.copytree(p, Path(ctx.out) / p.name)
    return trainer.state


@register("train.anneal")
def anneal(ctx: JobContext) -> None:
    run_anneal(ctx)


@register("model.average")
def average(ctx: JobContext) -> None:
    """Uniform (Polyak) average: the last `last` checkpoints an annealing artifact kept
    (input `checkpoints`), or the models named `member0`, `member1`, ... (post-training)."""
    members = sorted((k for k in ctx.inputs if k.startswith("member")), key=lambda k: int(k[6:]))
    if "checkpoints" in ctx.inputs:
        k = int(ctx.config.get("last", 1))
        found = sorted(Path(ctx.inputs["checkpoints"]).glob("ckpt-*"))
        if len(found) < k:
            raise JobFailed(f"{ctx.job_id}: asked to average the last {k} checkpoints but "
                            f"{ctx.inputs['checkpoints']} holds {len(found)}; hint: raise keep_last")
        chosen = found[-k:]
    elif members:
        chosen = [Path(ctx.inputs[k]) for k in members]
    else:
        raise JobFailed(f"{ctx.job_id}: needs a 'checkpoints' input (a train.anneal artifact) "
                        "or member0, member1, ... checkpoints")
    average_checkpoints(chosen, ctx.out)
    if "tokenizer" in ctx.inputs:  # post-training checkpoints carry their tokenizer
        for name in (TOKENIZER_MODEL_FILE, TOKENIZER_META_FILE):
            shutil.copyfile(Path(ctx.inputs["tokenizer"]) / name, Path(ctx.out) / name)
    write_json(Path(ctx.out) / "stats.json", {"averaged": len(chosen)})
    report.write(Path(ctx.out), ["### Checkpoint average", "",
                                 f"Uniform average of {len(chosen)} checkpoints: "
                                 + ", ".join(_member_name(p) for p in chosen), ""])


def _member_name(path: Path) -> str:
    """`ckpt-000120` for an annealing checkpoint, else the job that made it (from its meta)."""
    if path.name.startswith("ckpt-"):
        return path.name
    try:
        return str(read_meta(path).get("extra", {}).get("job") or path.name)
    except CheckpointError:
        return path.name


# --- evals --------------------------------------------------------------------------------


@register("eval.perplexity")
def perplexity(ctx: JobContext) -> None:
    """Validation loss and perplexity per source on the held-out split."""
    model = ctx.load_model()
    params = ctx.config.get("params", {}) or {}
    tokens = int(params.get("tokens", 65_536))
    seq_len = int(ctx.config.get("context", model.args.max_context))
    sources = data_sources(ctx)
    ctx.progress.start(len(sources), "sources")
    results = {}
    for name, path in sources.items():
        results[name] = val_loss(model, path, name, seq_len, tokens)
        ctx.progress.advance(1)
    write_json(Path(ctx.out) / "eval.json", {"context": seq_len, "sources": results})
    write_json(Path(ctx.out) / "stats.json", {f"{n}_loss": round(r["loss"], 4) for n, r in results.items()})
    lines = ["### Validation perplexity", "", f"Context {seq_len}, up to {tokens:,} tokens per source.", "",
             "| source | loss | perplexity | tokens |", "|---|---|---|---|"]
    lines += [f"| {n} | {r['loss']:.4f} | {r['perplexity']:.2f} | {int(r['tokens']):,} |"
              for n, r in results.items()]
    report.write(Path(ctx.out), lines + [""])
    ctx.metric(**{f"val_loss_{n}": r["loss"] for n, r in results.items()})


def _eval_sources(ctx: JobContext) -> dict[str, Path]:
    try:
        return data_sources(ctx)
    except JobFailed as exc:
        raise JobFailed(f"{exc} (held-out tokens to evaluate on)") from exc


@register("eval.needle")
def needle_eval(ctx: JobContext) -> None:
    """Needle-in-a-haystack on a checkpoint: a passkey at each depth of validation-token
    haystacks at each length (`params.lengths`, None = the job's context); accuracy per
    (depth, length) cell as JSON and a heatmap."""
    model = ctx.load_model()
    if "tokenizer" not in ctx.inputs:
        raise JobFailed(f"{ctx.job_id}: needs a 'tokenizer' input (to write the passkey prompt)")
    params = ctx.config.get("params", {}) or {}
    context = int(ctx.config.get("context", model.args.max_context))
    lengths = sorted({int(n) for n in (params.get("lengths") or [context])})
    too_long = [n for n in lengths if n > model.args.max_context]
    if too_long:
        raise JobFailed(f"{ctx.job_id}: needle lengths {too_long} exceed the model's context "
                        f"{model.args.max_context}")
    depths = [float(d) for d in params.get("depths", NEEDLE_DEPTHS)]
    trials = int(params.get("trials", 4))
    sources = _eval_sources(ctx)
    name = sorted(sources)[0]
    tok = load_tokenizer(ctx.inputs["tokenizer"])
    ctx.progress.start(len(depths) * len(lengths) * trials, "trials")
    try:
        filler = filler_tokens(sources[name], name, max(lengths) * 4, tok.eos_id)
        result = needle(model, tok, filler, lengths, depths, trials, ctx.seed)
    except ValueError as exc:
        raise JobFailed(f"{ctx.job_id}: {exc}") from exc
    ctx.progress.set(float(len(depths) * len(lengths) * trials))
    out = Path(ctx.out)
    write_json(out / "eval.json", {"source": name, **result})
    write_json(out / "stats.json", {"needle_accuracy": round(result["accuracy"], 4)})
    lines = ["### Needle in a haystack", "",
             f"Pass key retrieval, {trials} trials per cell, haystack from `{name}` validation "
             f"tokens; overall accuracy **{result['accuracy']:.1%}**.", ""]
    lines += report.needle_heatmap(out, result)
    lines += ["| depth | " + " | ".join(str(n) for n in lengths) + " |",
              "|---|" + "---|" * len(lengths)]
    lines += [f"| {d:.0%} | " + " | ".join(f"{v:.0%}" for v in row) + " |"
              for d, row in zip(depths, result["grid"], strict=True)]
    report.write(out, [*lines, ""])
    ctx.metric(needle_accuracy=result["accuracy"])


@register("eval.short_context_recovery")
def short_context_recovery(ctx: JobContext) -> None:
    """Validation loss at the short (pre-extension) length. With a `baseline` checkpoint
    input (the model before extension) it also reports the gate's ratio
    exp(-(loss - baseline_loss)): 1.0 = fully recovered. The short length is the config's
    `base_context` (as train.extend has it), else `params.context`, else the job's context."""
    model = ctx.load_model()
    params = ctx.config.get("params", {}) or {}
    tokens = int(params.get("tokens", 65_536))
    length = int(ctx.config.get("base_context") or params.get("context")
                 or ctx.config.get("context") or model.args.max_context)
    sources = _eval_sources(ctx)

    def mean_loss(m: Llama) -> tuple[float, dict[str, float]]:
        per = {n: val_loss(m, p, n, length, tokens)["loss"] for n, p in sources.items()}
        return sum(per.values()) / len(per), per

    ctx.progress.start(2 if "baseline" in ctx.inputs else 1, "models")
    loss, per = mean_loss(model)
    ctx.progress.advance(1)
    result: dict[str, Any] = {"context": length, "tokens": tokens, "loss": loss, "sources": per}
    lines = ["### Short-context recovery", "",
             f"Validation loss at {length} tokens (up to {tokens:,} tokens per source).", "",
             "| model | loss |", "|---|---|", f"| this checkpoint | {loss:.4f} |"]
    if "baseline" in ctx.inputs:
        base, _ = mean_loss(ctx.load_model("baseline"))
        ctx.progress.advance(1)
        result |= {"baseline_loss": base, "recovery": math.exp(-(loss - base))}
        lines += [f"| baseline (before extension) | {base:.4f} |", "",
                  f"Recovery exp(−(loss − baseline)) = **{result['recovery']:.4f}** (1.0 = fully recovered).", ""]
    else:
        lines.append("")
    write_json(Path(ctx.out) / "eval.json", result)
    write_json(Path(ctx.out) / "stats.json", {k: round(v, 4) for k, v in result.items()
                                         if k in ("loss", "baseline_loss", "recovery")})
    report.write(Path(ctx.out), lines)
    ctx.metric(short_context_loss=loss, **({"recovery": result["recovery"]} if "recovery" in result else {}))
