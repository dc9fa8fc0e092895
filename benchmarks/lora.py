"""Full fine-tuning vs LoRA vs QLoRA (LoRA over a 4-bit NF4 base) on the same model, side by
side in one run: peak memory of the training process and time per optimizer step.

    python benchmarks/lora.py                         # a 106M-parameter Llama, CPU
    python benchmarks/lora.py --device cuda --dim 2048 --layers 16 --vocab 128256 --seq 2048

Each variant trains in its own process (a fresh allocator, so the peaks do not mix): AdamW
over all weights, or over rank-r adapters on every projection (`runtime/post/lora.py`)
with the weights frozen, or those adapters over projections stored in NF4
(`runtime/post/nf4.py`). Peak memory is measured over the training steps, after the model
is built (and quantized): the process's peak resident set on CPU (Linux's VmHWM, reset
through /proc/self/clear_refs once the model is ready, so the fp32 weights a 4-bit base was
made from do not count) and `torch.cuda.max_memory_allocated` on CUDA. Prints the ratios and writes JSON to
benchmarks/results/lora-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import write_result  # noqa: E402


def model_config(args: argparse.Namespace) -> dict:
    heads = args.dim // 64
    return {"name": "bench", "vocab_size": args.vocab, "dim": args.dim, "layers": args.layers,
            "heads": heads, "kv_heads": max(1, heads // 4), "head_dim": 64,
            "ffn_dim": 256 * -(-int(8 * args.dim / 3) // 256), "norm_eps": 1e-5, "rope_theta": 500000.0,
            "rope_scaling": None, "tied_embeddings": True, "init_std": 0.02,
            "max_context": args.seq, "document_mask": True}


def _reset_peak_rss() -> bool:
    """Start the process's peak resident set afresh (Linux); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset: bool) -> float:
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def train(args: argparse.Namespace) -> dict:
    """One variant, in this process: `args.steps` AdamW steps; the first is warm-up."""
    import torch

    from runtime.model import from_config
    from runtime.post import lora as LORA
    from runtime.post import nf4 as NF4

    torch.manual_seed(0)
    device = torch.device(args.device)
    model = from_config(model_config(args), seed=0).to(device)
    total = sum(p.numel() for p in model.parameters())
    if args.variant == "qlora":
        NF4.quantize_blocks(model)
    if args.variant in ("lora", "qlora"):
        params = LORA.add_adapters(model, {"rank": args.rank, "targets": list(LORA.TARGETS)})
    else:
        params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokens = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    import gc

    gc.collect()
    reset = device.type == "cpu" and _reset_peak_rss()
    if device.type == "cuda":  # from here: the fp32 weights a 4-bit base was made from are gone
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = model(tokens[:, :-1], None, tokens[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_rss_mib(reset)
    return {"variant": args.variant, "parameters": total, "trainable": sum(p.numel() for p in params),
            "step_s": sorted(times[1:])[len(times[1:]) // 2], "peak_mib": peak, "last_loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--seq", type=int, default=129)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--variant", choices=["full", "lora", "qlora"], help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.variant:  # the child: one variant, its result as JSON on stdout
        print(json.dumps(train(args)))
        return
    rows = []
    passthrough = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("variant", "out")]
    config = {k: v for k, v in vars(args).items() if k not in ("variant", "out")}
    for variant in ("full", "lora", "qlora"):
        out = subprocess.run([sys.executable, __file__, *passthrough, "--variant", variant],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        # written as each variant ends: a run cut short (a GPU lease) keeps what it measured
        write_result("lora", {"config": config, "model": model_config(args), "rows": rows}, args.out)
    full, lora, qlora = rows
    print(f"{'variant':8} {'trainable':>14} {'step (s)':>9} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['variant']:8} {r['trainable']:>14,} {r['step_s']:>9.2f} {r['peak_mib']:>9.0f}")
    ratios = {"peak_memory": lora["peak_mib"] / full["peak_mib"], "step_time": lora["step_s"] / full["step_s"],
              "trainable": lora["trainable"] / full["trainable"],
              "qlora_peak_memory": qlora["peak_mib"] / full["peak_mib"],
              "qlora_step_time": qlora["step_s"] / full["step_s"]}
    print(f"LoRA / full: peak memory {ratios['peak_memory']:.2f}x, step time {ratios['step_time']:.2f}x, "
          f"trainable {ratios['trainable']:.2%}")
    print(f"QLoRA / full: peak memory {ratios['qlora_peak_memory']:.2f}x, "
          f"step time {ratios['qlora_step_time']:.2f}x")
    path = write_result("lora", {"config": config, "model": model_config(args), "rows": rows, "ratios": ratios},
                        args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
