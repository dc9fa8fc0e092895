"""One AdamW training step of a Llama-3.2-1B-shaped model: herd vs Hugging Face, side by side.

    python benchmarks/train_step.py                 # on a GPU: all variants, table + JSON
    python benchmarks/train_step.py --only herd     # one variant
    python benchmarks/train_step.py --smoke         # tiny model on the CPU: checks the script only
    python benchmarks/train_step.py --profile 3     # + where the time goes: 3 profiled steps each

Shape: dim 2048, 16 layers, 32/8 heads, FFN 8192, vocab 128,256, tied; batch 8 x 4096
packed tokens (documents of random lengths, the same for every variant), bf16 autocast
over fp32 weights, fused AdamW. Variants:

  herd           herd's model: Triton kernels + FlexAttention with the document mask
  herd-varlen    herd with varlen FlashAttention over the packed documents instead of
                 FlexAttention (the child runs with HERD_ATTENTION=varlen)
  herd-unstacked herd with one matmul per projection instead of q/k/v and w1/w3 stacked
                 (HERD_FUSE_PROJECTIONS=off): what stacking them gains
  herd-ac        herd with activation checkpointing (each block recomputed in backward):
                 the memory it saves and the time it costs
  herd-compile   the same as herd under torch.compile
  hf-eager       transformers LlamaForCausalLM (SDPA attention, causal over the whole row)
  hf-compile     the same under torch.compile
  hf-liger       transformers + Liger Kernel's `apply_liger_kernel_to_llama` (when importable)
  herd-job       herd's whole pre-training step path: `runtime.train.loop.Trainer` reading a
                 synthetic `data.tokenize` artifact through PackedLoader, with the job's AdamW
                 (decay groups), cosine schedule, clipping and precision (bf16 on CUDA, fp32 on
                 the CPU); tokens/s and MFU are the job's own, not a bare model step

Each variant runs in its own process so peak memory and monkey-patching never leak from
one to the next. Reported: tokens/s, ms per step, peak allocated GiB, and ratios against
hf-liger (the issue's target: herd >= 1.1x its tokens/s at no more peak memory), and MFU for
herd-job on CUDA (6·N FLOPs per token against the device's bf16 peak, as the trainer computes
it). JSON goes to benchmarks/results/train_step-<hostname>.json.

    python benchmarks/train_step.py --only herd-job            # the job path alone, on a GPU
    python benchmarks/train_step.py --smoke --only herd-job    # CPU check (seconds)

--profile N runs N more steps per variant under torch.profiler after the timed ones (the
timed numbers never include them) and reports where a step's time goes, per step: device
time by kernel category (CATEGORIES: gemm, attention, loss, norm, ...; self CPU time per op
in --smoke on the CPU), busy = all kernels' time against the profiled step's wall time (the
idle rest is the host not keeping the GPU fed, or syncs), and the 15 costliest kernels. The
parent prints a second table of the categories, one column per variant, then each variant's
top 10; the JSON keeps every variant's "profile".

    python benchmarks/train_step.py --profile 3 --only herd --only hf-liger --only herd-varlen
    python benchmarks/train_step.py --smoke --profile 2 --only herd --only herd-job
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import result_path, write_result  # noqa: E402

# The target's pair first, the compiled variants (minutes of compilation) last: on a short
# GPU lease a time limit then costs the least informative rows.
VARIANTS = ["herd", "herd-varlen", "herd-unstacked", "hf-liger", "hf-eager", "herd-job", "herd-ac",
            "herd-compile", "hf-compile"]
BASELINE = "hf-liger"
# Environment a variant's child process runs with, over the parent's.
VARIANT_ENV: dict[str, dict[str, str]] = {"herd-varlen": {"HERD_ATTENTION": "varlen"},
                                          "herd-unstacked": {"HERD_FUSE_PROJECTIONS": "off"}}

# --profile's buckets: (category, regex searched case-insensitively in a kernel's name, or an
# op's on the CPU); the first match wins, "other" takes the rest and stays last. Attention
# comes before gemm because FlashAttention-3 and cuDNN/mem-efficient SDPA kernels carry
# "cutlass"/"sm90_"/"sm80" in their names; optimizer before norm because grad clipping's
# kernels are LpNorm/NormTwo reductions. Names seen: nvjet_tst_*, sm90_xmma_gemm_*,
# pytorch_flash::flash_fwd_kernel, fmha_cutlassF_*, triton_tem_fused_* (FlexAttention, unless
# an mm template), herd's _rms_norm_fwd/_rope_kernel/_swiglu_fwd/_ce_rows, Liger's
# _rms_norm_forward_kernel/_triton_rope/_swiglu_forward_kernel/liger_cross_entropy_kernel,
# torch's at::native::*elementwise_kernel<..direct_copy..>, multi_tensor_apply_kernel<..Adam..>;
# on the CPU, aten::mm, aten::_scaled_dot_product_flash_attention_for_cpu, aten::copy_, ...
CATEGORIES: list[tuple[str, str]] = [
    ("attention", r"flash|fmha|flex|attention|attn|sdpa|cudnn|triton_tem_fused(?!_(add|b)?mm)"),
    ("gemm", r"gemm|cutlass|xmma|nvjet|cublas|sm90_|sm80_|sm100_|matmul|splitk"
             r"|(?<![a-z0-9])(add|b)?mm(?![a-z0-9])"),
    ("loss", r"_ce_rows|cross_entropy|liger.*cross|fused_linear|nll_loss|log_?softmax"
             r"|element_mul_kernel"),
    ("optimizer", r"adam|multi_tensor|foreach|lpnorm|normtwo|vector_norm|clip_grad"),
    ("norm", r"rms|norm|rsqrt"),
    ("rope", r"rope|rotary"),
    ("swiglu", r"swiglu|silu|geglu"),
    ("copy/cast", r"copy|cast|memcpy|memset|(?<![a-z0-9])cat(?![a-z0-9])"),
    ("reduce", r"reduce|sum|mean"),
    ("other", r""),
]
_CATEGORY_RES = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in CATEGORIES]
PROFILE_TOP = 15

LLAMA32_1B: dict[str, Any] = {
    "name": "llama3.2-1b-shape",
    "vocab_size": 128256,
    "dim": 2048,
    "layers": 16,
    "heads": 32,
    "kv_heads": 8,
    "head_dim": 64,
    "ffn_dim": 8192,
    "norm_eps": 1e-5,
    "rope_theta": 500000.0,
    "rope_scaling": {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_context": 8192},
    "tied_embeddings": True,
    "max_context": 131072,
    "document_mask": True,
    "init_std": 0.02,
}
SMOKE: dict[str, Any] = {**LLAMA32_1B, "vocab_size": 512, "dim": 64, "layers": 2, "heads": 4,
                         "kv_heads": 2, "head_dim": 16, "ffn_dim": 128, "max_context": 256}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--doc-len", type=int, default=1024, help="mean document length in a packed row")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation, autotuning)")
    p.add_argument("--only", choices=VARIANTS, action="append", help="run just these variants")
    p.add_argument("--smoke", action="store_true", help="tiny model on the CPU: exercise the script")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    p.add_argument("--variant-timeout", type=float, default=None, metavar="S",
                   help="give up on a variant after S seconds (reported, the rest still run)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the timed steps, profile N more: time per kernel category")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# -- --profile: where a step's time goes --------------------------------------------------


def category(name: str) -> str:
    """The CATEGORIES bucket of a kernel (or CPU op) name: the first pattern found in it."""
    return next(cat for cat, pattern in _CATEGORY_RES if pattern.search(name))


def short_name(name: str, width: int = 90) -> str:
    """A kernel name cut to `width`, after the namespaces that would otherwise fill it (a
    torch elementwise kernel's functor comes ~90 characters in)."""
    for noise in ("void ", "(anonymous namespace)::", "at::native::", "at::", "c10::"):
        name = name.replace(noise, "")
    return name if len(name) <= width else name[: width - 3] + "..."


def summarize_profile(times: Iterable[tuple[str, float]], steps: int, wall_s: float,
                      source: str, top: int = PROFILE_TOP) -> dict[str, Any]:
    """Per-step totals from (name, microseconds) per kernel launch over `steps` profiled steps.

    busy_ms sums every kernel's time (kernels overlapping on several streams count twice, so
    idle_fraction can go below 0); categories add up to it."""
    per_name: dict[str, list[float]] = {}
    for name, us in times:
        entry = per_name.setdefault(name, [0.0, 0])
        entry[0] += us
        entry[1] += 1
    by_category = {cat: 0.0 for cat, _ in CATEGORIES}
    for name, (us, _) in per_name.items():
        by_category[category(name)] += us
    busy_us = sum(by_category.values())
    wall_ms = 1000 * wall_s / steps

    def ms(us: float) -> float:
        return round(us / 1000 / steps, 4)

    ranked = sorted(per_name.items(), key=lambda item: -item[1][0])[:top]
    return {
        "source": source,
        "steps": steps,
        "busy_ms": ms(busy_us),
        "wall_ms": round(wall_ms, 4),
        "busy_fraction": round(busy_us / 1000 / steps / wall_ms, 4) if wall_ms > 0 else None,
        "idle_fraction": round(1 - busy_us / 1000 / steps / wall_ms, 4) if wall_ms > 0 else None,
        "categories": {cat: ms(us) for cat, us in by_category.items()},
        "kernels": len(per_name),
        "top": [{"name": short_name(name), "category": category(name), "ms": ms(us),
                 "calls": round(calls / steps, 2)} for name, (us, calls) in ranked],
    }


def start_profiler(device: str) -> Any:
    """A started torch profiler: CPU ops, and CUDA kernels on the GPU."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
    prof = profile(activities=activities)
    prof.start()
    return prof


def profile_summary(prof: Any, device: str, steps: int, wall_s: float) -> dict[str, Any]:
    """summarize_profile over a stopped profiler's events: each CUDA kernel's (and memcpy's,
    memset's) device time on the GPU, each op's self CPU time on the CPU. GPU-side
    user-annotation ranges are skipped: they span kernels already counted."""
    from torch.autograd import DeviceType

    if device == "cuda":
        times = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
                 if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False)]
        source = "CUDA kernel time"
    else:
        times = [(e.name, e.self_cpu_time_total) for e in prof.events()
                 if e.device_type == DeviceType.CPU]
        source = "self CPU time per op"
    return summarize_profile(times, steps, wall_s, source)


# -- one variant, in a child process ----------------------------------------------------


def make_batch(args: argparse.Namespace, vocab: int, device: str):
    """Random tokens packed from documents of exponential lengths (fixed seed: every variant
    trains on the same batch)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    tokens = torch.randint(0, vocab, (args.batch, args.seq + 1), generator=g)
    doc_ids = torch.empty(args.batch, args.seq, dtype=torch.long)
    for row in range(args.batch):
        pos, doc = 0, 0
        while pos < args.seq:
            n = max(1, int(torch.empty(1).exponential_(1.0 / args.doc_len, generator=g).item()))
            doc_ids[row, pos : pos + n] = doc
            pos, doc = pos + n, doc + 1
    inputs, targets = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()
    # Never predict the first token of the next document from the previous one.
    boundary = torch.zeros_like(doc_ids, dtype=torch.bool)
    boundary[:, :-1] = doc_ids[:, 1:] != doc_ids[:, :-1]
    targets[boundary] = -100
    return inputs.to(device), doc_ids.to(device), targets.to(device)


def build(variant: str, config: dict[str, Any], device: str):
    """(model, loss_fn(tokens, doc_ids, targets) -> loss) for one variant."""
    import torch

    if variant.startswith("herd"):
        from runtime.model import from_config

        model = from_config(config, device=device, seed=0)
        model.activation_checkpointing = variant == "herd-ac"
        step_model = torch.compile(model) if variant == "herd-compile" else model

        def herd_loss(tokens, doc_ids, targets):
            return step_model(tokens, doc_ids, targets)

        return model, herd_loss

    if variant == "hf-liger":
        from liger_kernel.transformers import apply_liger_kernel_to_llama

        apply_liger_kernel_to_llama()
    from transformers import LlamaConfig, LlamaForCausalLM

    from runtime.model.hf import hf_config

    hf_cfg = hf_config(config, "float32")
    hf_cfg.pop("architectures")
    hf_cfg.pop("model_type")
    hf_cfg.pop("torch_dtype")
    hf_config_obj = LlamaConfig(**hf_cfg, attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM(hf_config_obj)
    step_model = torch.compile(model) if variant == "hf-compile" else model

    def hf_loss(tokens, doc_ids, targets):
        # transformers shifts labels itself: labels[t] = targets[t - 1] (the masked ones too).
        labels = torch.cat([tokens[:, :1], targets[:, :-1]], dim=1)
        return step_model(input_ids=tokens, labels=labels).loss

    return model, hf_loss


def write_token_artifact(directory: Path, vocab: int, train_tokens: int, doc_len: int,
                         seed: int = 1234) -> Path:
    """A `data.tokenize`-format artifact (docs/data.md) of random token ids: one shard per
    split (uint32 tokens + int64 document offsets) and meta.json. Documents have exponential
    lengths around `doc_len` and end with EOS, as the tokenizer's document suffix does."""
    from types import SimpleNamespace

    import numpy as np

    from runtime.data.token_shards import write_meta

    rng = np.random.default_rng(seed)
    eos_id, bos_id = vocab - 1, vocab - 2
    directory.mkdir(parents=True, exist_ok=True)
    stats: dict[str, int] = {}
    for split, want in (("train", train_tokens), ("val", max(1024, train_tokens // 100))):
        lengths: list[int] = []
        total = 0
        while total < want:
            n = max(2, int(rng.exponential(doc_len)))
            lengths.append(n)
            total += n
        ends = np.cumsum(lengths)
        tokens = rng.integers(0, bos_id, size=total, dtype=np.uint32)
        tokens[ends - 1] = eos_id
        np.save(directory / f"part-00000.{split}.tokens.npy", tokens)
        np.save(directory / f"part-00000.{split}.index.npy", np.r_[0, ends].astype(np.int64))
        stats[f"{split}_docs"], stats[f"{split}_tokens"] = len(lengths), total
    tok = SimpleNamespace(n_vocab=vocab, eos_id=eos_id, bos_id=bos_id)
    write_meta(directory, ["part-00000"], [stats], tok, {})  # type: ignore[arg-type]
    return directory


def job_config(args: argparse.Namespace, config: dict[str, Any], device: str) -> dict[str, Any]:
    """A train.pretrain config (as the compiler emits it, docs/training.md) for the benchmark
    shape: `batch` sequences of `seq` tokens per step, no accumulation, AdamW as the other
    variants use it, cosine schedule warming up over the untimed steps, clipping at 1.0;
    checkpoints and validation fall beyond the run so no I/O is timed. --profile's steps run
    after the schedule's end (at min_lr), so the timed steps see the same schedule with it."""
    total = args.warmup + args.steps
    run = total + args.profile
    return {
        "model": dict(config), "context": args.seq, "steps": run,
        "tokens": run * args.batch * args.seq,
        "batch": [{"seqs": args.batch, "tokens": args.batch * args.seq, "from_tokens": 0}],
        "micro_batch": None,
        "optimizer": {"kind": "adamw", "lr": 1e-4, "betas": [0.9, 0.95], "weight_decay": 0.1,
                      "eps": 1e-8},
        "schedule": {"kind": "cosine", "peak_lr": 1e-4, "min_lr": 1e-5,
                     "warmup_steps": max(1, args.warmup), "total_steps": total},
        "mix": {"weights": {"bench": 1.0}, "max_epochs": 4.0, "seed": 0},
        "clip": 1.0, "seed": 0, "compile": False,
        "checkpoint_every": run + 1, "eval_every": run + 1,
        "precision": "bf16" if device == "cuda" else "fp32",
    }


def run_job(args: argparse.Namespace, config: dict[str, Any], device: str) -> dict[str, Any]:
    """herd-job: the pre-training job's own step path (`Trainer.run`) on a synthetic artifact.

    Each step's end is stamped from the trainer's on_step hook after a device sync, so a
    measured step covers everything the job does per step: loader, schedule, forward and
    backward, clipping, the optimizer and the metrics line. The trainer's final checkpoint
    (written whenever `run` ends) is replaced by a no-op: the benchmark times steps, not I/O.
    With --profile the same `run` goes on for N more steps, profiled from the hook: every
    reported number but "profile" covers the timed steps only."""
    import logging
    import statistics
    import tempfile

    import torch

    from runtime.jobs.context import JobContext
    from runtime.model import from_config
    from runtime.train.loop import Trainer

    total = args.warmup + args.steps
    run = total + args.profile
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with tempfile.TemporaryDirectory(prefix="herd-train-step-") as tmp:
        root = Path(tmp)
        # rows take seq + 1 tokens (the last is the next row's first input); 10% to spare.
        # Sized for the timed steps whatever --profile asks (the same data, so the same timed
        # numbers): the profiled steps reread it, within the loader's 4 epochs.
        data_steps = max(total, -(-run // 3))
        need = int(data_steps * args.batch * (args.seq + 1) * 1.1) + 4 * args.seq
        data = write_token_artifact(root / "tokens", config["vocab_size"], need, args.doc_len)
        (root / "out").mkdir()
        (root / "work").mkdir()
        ctx = JobContext(job_id="bench-pretrain", kind="train.pretrain", stage="train",
                         config=job_config(args, config, device), inputs={"data:bench": data},
                         out=root / "out", work=root / "work", run_dir=root,
                         settings={"device": device, "workers": 1},
                         log=logging.getLogger("herd.bench.train_step"),
                         metrics_path=root / "metrics.jsonl")
        model = from_config(ctx.config["model"], device=device, seed=ctx.seed)
        marks: list[float] = []
        peak = float("nan")
        prof: Any = None
        profiled_from = 0.0

        def stamp(step: int, state: Any) -> None:
            nonlocal peak, prof, profiled_from
            sync()
            marks.append(time.perf_counter())
            if step == total and device == "cuda":
                peak = torch.cuda.max_memory_allocated() / 2**30
            if step == total and args.profile:
                prof = start_profiler(device)
                profiled_from = time.perf_counter()
            elif step == run and prof is not None:
                prof.stop()

        trainer = Trainer(ctx, model, ctx.config, on_step=stamp)
        trainer.checkpoint = lambda: trainer.root  # type: ignore[method-assign]
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        sync()
        marks.append(time.perf_counter())
        state = trainer.run(run)
        metrics = [json.loads(line) for line in ctx.metrics_path.read_text().splitlines()]  # type: ignore[union-attr]
    if len(marks) != run + 1:
        raise RuntimeError(f"trainer ran {len(marks) - 1} steps, expected {run}")
    elapsed = marks[total] - marks[args.warmup]
    tokens_per_step = args.batch * args.seq
    tps = tokens_per_step * args.steps / elapsed
    measured = metrics[args.warmup:total]
    result: dict[str, Any] = {
        "variant": args.child,
        "tokens_per_s": tps,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_gib": peak,
        "params": trainer.n_params,
        "first_loss": state.history["loss"][0],
        "last_loss": state.history["loss"][total - 1],
        # the trainer's own per-step numbers (its clock stops at opt.step without a sync)
        "job_tokens_per_s_median": statistics.median(m["tokens_per_s"] for m in measured),
        "lr_first_last": [state.history["lr"][0], state.history["lr"][total - 1]],
    }
    if trainer.peak_flops:
        result["mfu"] = 6.0 * trainer.n_params * tps / trainer.peak_flops
        result["job_mfu_median"] = statistics.median(m["mfu"] for m in measured)
        result["peak_tflops"] = trainer.peak_flops / 1e12
    if prof is not None:
        result["profile"] = profile_summary(prof, device, args.profile, marks[run] - profiled_from)
    return result


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = "cpu" if args.smoke else "cuda"
    config = SMOKE if args.smoke else LLAMA32_1B
    if args.child == "herd-job":
        return run_job(args, config, device)
    torch.manual_seed(0)
    model, loss_fn = build(args.child, config, device)
    tokens, doc_ids, targets = make_batch(args, config["vocab_size"], device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=device == "cuda")
    autocast = torch.autocast(device, dtype=torch.bfloat16)

    def step() -> float:
        with autocast:
            loss = loss_fn(tokens, doc_ids, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    losses = [float(step()) for _ in range(args.warmup)]
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    timed = [step() for _ in range(args.steps)]
    sync()
    elapsed = time.perf_counter() - start
    losses += [float(x) for x in timed]
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
    tokens_per_step = args.batch * args.seq
    result: dict[str, Any] = {
        "variant": args.child,
        "tokens_per_s": tokens_per_step * args.steps / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_gib": peak,
        "params": sum(p.numel() for p in model.parameters()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }
    if args.profile:
        prof = start_profiler(device)
        start = time.perf_counter()
        for _ in range(args.profile):
            step()
        sync()
        wall = time.perf_counter() - start
        prof.stop()
        result["profile"] = profile_summary(prof, device, args.profile, wall)
    return result


# -- the parent: run every variant, compare, write JSON ----------------------------------


def available(variant: str) -> str | None:
    """Why a variant cannot run here, or None."""
    import importlib.util

    if variant.startswith("hf") and importlib.util.find_spec("transformers") is None:
        return "transformers not installed"
    if variant == "hf-liger" and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel not installed"
    return None


def child_env(variant: str) -> dict[str, str]:
    """The parent's environment plus the variant's own (VARIANT_ENV): herd-varlen and
    herd-unstacked differ from herd only in a switch their processes read."""
    return {**os.environ, **VARIANT_ENV.get(variant, {})}


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
           "--seq", str(args.seq), "--doc-len", str(args.doc_len), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--profile", str(args.profile)]
    cmd += ["--smoke"] if args.smoke else []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=child_env(variant),
                              timeout=args.variant_timeout)
    except subprocess.TimeoutExpired:
        return {"variant": variant, "error": f"timed out after {args.variant_timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"variant": variant, "error": " | ".join(tail) or f"exit code {proc.returncode}"}


def table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["variant"] == BASELINE and "error" not in r), None)
    lines = [f"{'variant':<14}{'tokens/s':>12}{'ms/step':>10}{'peak GiB':>10}"
             f"{'speed vs ' + BASELINE:>20}{'mem vs ' + BASELINE:>18}{'MFU':>7}   loss first->last"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:<14}  skipped: {r['error']}")
            continue
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        mem = f"{r['peak_gib'] / base['peak_gib']:.2f}x" if base else "-"
        mfu = f"{r['mfu']:.1%}" if "mfu" in r else "-"
        lines.append(f"{r['variant']:<14}{r['tokens_per_s']:>12,.0f}{r['ms_per_step']:>10.1f}"
                     f"{r['peak_gib']:>10.1f}{speed:>20}{mem:>18}{mfu:>7}   "
                     f"{r['first_loss']:.3f}->{r['last_loss']:.3f}")
    return "\n".join(lines)


def profile_table(results: list[dict[str, Any]], top: int = 10) -> str:
    """Where the time goes: ms per profiled step by category, one column per profiled variant,
    then each variant's costliest kernels. Empty when no variant was profiled."""
    profiled = [r for r in results if "profile" in r]
    if not profiled:
        return ""
    width = max(12, *(len(r["variant"]) + 2 for r in profiled))
    source = ", ".join(sorted({r["profile"]["source"] for r in profiled}))

    def row(label: str, cells: Iterable[str]) -> str:
        return f"{label:<16}" + "".join(f"{cell:>{width}}" for cell in cells)

    profiles = [r["profile"] for r in profiled]
    lines = [f"where a step's time goes (ms per profiled step, {source}):",
             row("", (r["variant"] for r in profiled))]
    lines += [row(cat, (f"{p['categories'][cat]:.2f}" for p in profiles)) for cat, _ in CATEGORIES]
    lines += [row("busy", (f"{p['busy_ms']:.2f}" for p in profiles)),
              row("wall", (f"{p['wall_ms']:.2f}" for p in profiles)),
              row("idle %", ("-" if p["idle_fraction"] is None else f"{100 * p['idle_fraction']:.1f}"
                             for p in profiles)),
              row("timed ms/step", (f"{r['ms_per_step']:.2f}" for r in profiled))]
    for r in profiled:
        lines.append(f"\n{r['variant']}: top {top} (ms/step, calls/step, category, name)")
        for k in r["profile"]["top"][:top]:
            lines.append(f"  {k['ms']:>9.3f} {k['calls']:>7g}  {k['category']:<10} {k['name']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    import torch

    if not args.smoke and not torch.cuda.is_available():
        print("train_step.py measures a GPU training step and found no CUDA device.\n"
              "Run it on the GPU machine, or pass --smoke to check the script on a CPU.",
              file=sys.stderr)
        return 2
    if args.smoke:
        args.batch, args.seq, args.doc_len, args.steps, args.warmup = 2, 64, 16, 2, 1
    results: list[dict[str, Any]] = []
    record = {
        "benchmark": "train_step",
        "host": socket.gethostname(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor(),
        "torch": torch.__version__,
        "smoke": args.smoke,
        "shape": {"batch": args.batch, "seq": args.seq, "doc_len": args.doc_len,
                  "model": SMOKE if args.smoke else LLAMA32_1B},
        "steps": args.steps,
        "warmup": args.warmup,
        "profile_steps": args.profile,
        "results": results,
        "target": "herd tokens/s >= 1.1x hf-liger at no more peak memory",
    }
    for variant in args.only or VARIANTS:
        missing = available(variant)
        result = {"variant": variant, "error": missing} if missing else run_variant(variant, args)
        results.append(result)
        print(f"  {variant}: " + (result.get("error") or f"{result['tokens_per_s']:,.0f} tokens/s"),
              file=sys.stderr)
        write_result("train_step", record, args.out)  # after each variant: a killed run keeps its rows
    print(table(results))
    if args.profile:
        print("\n" + profile_table(results))
    print(f"wrote {result_path('train_step', args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
