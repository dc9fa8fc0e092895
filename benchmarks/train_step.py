"""One AdamW training step of a Llama-3.2-1B-shaped model: herd vs Hugging Face, side by side.

    python benchmarks/train_step.py                 # on a GPU: all variants, table + JSON
    python benchmarks/train_step.py --only herd     # one variant
    python benchmarks/train_step.py --smoke         # tiny model on the CPU: checks the script only

Shape: dim 2048, 16 layers, 32/8 heads, FFN 8192, vocab 128,256, tied; batch 8 x 4096
packed tokens (documents of random lengths, the same for every variant), bf16 autocast
over fp32 weights, fused AdamW. Variants:

  herd           herd's model: Triton kernels + FlexAttention with the document mask
  herd-compile   the same under torch.compile
  hf-eager       transformers LlamaForCausalLM (SDPA attention, causal over the whole row)
  hf-compile     the same under torch.compile
  hf-liger       transformers + Liger Kernel's `apply_liger_kernel_to_llama` (when importable)

Each variant runs in its own process so peak memory and monkey-patching never leak from
one to the next. Reported: tokens/s, ms per step, peak allocated GiB, and ratios against
hf-liger (the issue's target: herd >= 1.1x its tokens/s at no more peak memory). JSON goes
to benchmarks/results/train_step-<hostname>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["herd", "herd-compile", "hf-eager", "hf-compile", "hf-liger"]
BASELINE = "hf-liger"

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
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    return p.parse_args(argv)


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


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    device = "cpu" if args.smoke else "cuda"
    config = SMOKE if args.smoke else LLAMA32_1B
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
    return {
        "variant": args.child,
        "tokens_per_s": tokens_per_step * args.steps / elapsed,
        "ms_per_step": 1000 * elapsed / args.steps,
        "peak_gib": peak,
        "params": sum(p.numel() for p in model.parameters()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


# -- the parent: run every variant, compare, write JSON ----------------------------------


def available(variant: str) -> str | None:
    """Why a variant cannot run here, or None."""
    import importlib.util

    if variant.startswith("hf") and importlib.util.find_spec("transformers") is None:
        return "transformers not installed"
    if variant == "hf-liger" and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel not installed"
    return None


def run_variant(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--batch", str(args.batch),
           "--seq", str(args.seq), "--doc-len", str(args.doc_len), "--steps", str(args.steps),
           "--warmup", str(args.warmup)] + (["--smoke"] if args.smoke else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
    return {"variant": variant, "error": " | ".join(tail) or f"exit code {proc.returncode}"}


def table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r["variant"] == BASELINE and "error" not in r), None)
    lines = [f"{'variant':<14}{'tokens/s':>12}{'ms/step':>10}{'peak GiB':>10}"
             f"{'speed vs ' + BASELINE:>20}{'mem vs ' + BASELINE:>18}   loss first->last"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:<14}  skipped: {r['error']}")
            continue
        speed = f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x" if base else "-"
        mem = f"{r['peak_gib'] / base['peak_gib']:.2f}x" if base else "-"
        lines.append(f"{r['variant']:<14}{r['tokens_per_s']:>12,.0f}{r['ms_per_step']:>10.1f}"
                     f"{r['peak_gib']:>10.1f}{speed:>20}{mem:>18}   "
                     f"{r['first_loss']:.3f}->{r['last_loss']:.3f}")
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
    results = []
    for variant in args.only or VARIANTS:
        missing = available(variant)
        result = {"variant": variant, "error": missing} if missing else run_variant(variant, args)
        results.append(result)
        print(f"  {variant}: " + (result.get("error") or f"{result['tokens_per_s']:,.0f} tokens/s"),
              file=sys.stderr)
    print(table(results))
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
        "results": results,
        "target": "herd tokens/s >= 1.1x hf-liger at no more peak memory",
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"train_step-{socket.gethostname()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
