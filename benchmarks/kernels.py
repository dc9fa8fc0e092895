"""herd's fused kernels against torch eager, torch.compile and Liger Kernel, side by side.

    python benchmarks/kernels.py                      # on a GPU: Llama 3 8B shapes (below)
    python benchmarks/kernels.py --model 70b --tokens 16384 --only rms_norm,swiglu
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke   # tiny, on the CPU: checks the script only

For each operation (rms_norm; add_rms_norm, a block's residual add fused with the norm after
it; apply_rope; swiglu; linear_cross_entropy; QLoRA's nf4_dequantize) and each pass (forward;
forward + backward — nf4_dequantize has no backward: its weight is frozen) it times every
implementation on the same inputs:

  herd       the Triton kernels in runtime/kernels/fused
  eager      the torch reference (runtime/kernels/reference.py), as plain torch runs it
  compile    the same reference under torch.compile
  liger      Liger Kernel's Triton ops, when liger_kernel is importable

The shapes are the issue's: RMSNorm, RoPE and SwiGLU on a batch of 2 x `--tokens` (16,384
tokens x 4,096 for RMSNorm, q 2 x 32 x 8,192 x 128 for RoPE, 16,384 x 14,336 for SwiGLU at
the default 8,192), linear + cross-entropy on 1 x `--tokens` (8,192 x 4,096 x 128,256),
nf4_dequantize on one FFN projection (14,336 x 4,096 weights, to bf16).
It prints median milliseconds, the ratio of each to herd (> 1: herd is faster) and the
peak memory each call allocates beyond its inputs; on a GPU also the same call replayed
from a CUDA graph (`graph ms`: the device's time alone — in a training step the host runs
ahead and only that counts — while `ms` includes the host's launch work, which dominates
ops of a few tenths of a millisecond; an op that syncs with the host inside cannot be
captured and says so). Results go to
benchmarks/results/kernels-<hostname>.json. Only GPU numbers mean anything; --smoke runs
the interpreted kernels on tiny shapes so that a machine without a GPU can check the script.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import result_path, write_result  # noqa: E402
from runtime.kernels import reference  # noqa: E402
from runtime.kernels.accuracy import rope_tables  # noqa: E402

# Llama 3 shapes (paper, table 3): model dim, FFN dim, query heads, KV heads; vocab 128,256.
MODELS: dict[str, dict[str, int]] = {
    "8b": {"dim": 4096, "ffn": 14336, "heads": 32, "kv_heads": 8, "vocab": 128_256},
    "70b": {"dim": 8192, "ffn": 28672, "heads": 64, "kv_heads": 8, "vocab": 128_256},
    "405b": {"dim": 16384, "ffn": 53248, "heads": 128, "kv_heads": 8, "vocab": 128_256},
    "smoke": {"dim": 64, "ffn": 96, "heads": 4, "kv_heads": 2, "vocab": 5000},
}
OPS = ("rms_norm", "add_rms_norm", "apply_rope", "swiglu", "linear_cross_entropy", "nf4_dequantize")
FORWARD_ONLY = ("nf4_dequantize",)  # frozen weights: nothing to differentiate
# The elementwise ops see two sequences of `--tokens` (the 16,384-token shapes, RoPE's
# batch of 2); linear + cross-entropy one (8,192 tokens, as Llama 3's loss layer per sequence).
ELEMENTWISE_BATCH = 2
Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Impl:
    """One implementation of an op: `prepare` reshapes the shared inputs into its own layout
    (outside the timing), `call` runs it."""

    name: str
    call: Callable[[Inputs], Any]
    prepare: Callable[[Inputs], Inputs] = lambda a: a


def make_inputs(op: str, shape: dict[str, int], tokens: int, dtype: torch.dtype, device: str) -> Inputs:
    """The op's inputs for packed sequences of `tokens` tokens, leaves needing gradients."""
    gen = torch.Generator(device=device).manual_seed(0)
    batch = 1 if op == "linear_cross_entropy" else ELEMENTWISE_BATCH

    def randn(*size: int, std: float = 1.0, grad: bool = True) -> torch.Tensor:
        t = torch.randn(*size, generator=gen, device=device, dtype=dtype) * std
        return t.requires_grad_(grad)

    dim, head_dim = shape["dim"], shape["dim"] // shape["heads"]
    if op == "rms_norm":
        return {"x": randn(batch, tokens, dim), "weight": randn(dim, std=0.1) + 1}
    if op == "add_rms_norm":  # the residual stream, a block's attention output, the FFN norm
        return {"x": randn(batch, tokens, dim), "delta": randn(batch, tokens, dim),
                "weight": randn(dim, std=0.1) + 1}
    if op == "apply_rope":
        cos, sin = rope_tables(tokens, head_dim)
        return {
            "q": randn(batch, tokens, shape["heads"], head_dim),
            "k": randn(batch, tokens, shape["kv_heads"], head_dim),
            "cos": cos.to(device),
            "sin": sin.to(device),
        }
    if op == "swiglu":
        return {"gate": randn(batch, tokens, shape["ffn"]), "up": randn(batch, tokens, shape["ffn"])}
    if op == "nf4_dequantize":
        from runtime.post import nf4

        codes, scales = nf4.quantize(randn(shape["ffn"], dim, std=0.02, grad=False))
        # `like`: holds no data, only the weight's shape and dtype (bf16 on the GPU)
        like = torch.empty(0, shape["ffn"], dim, device=device, dtype=dtype)
        return {"codes": codes, "scales": scales, "levels": nf4.LEVELS.to(device), "like": like}
    targets = torch.randint(0, shape["vocab"], (batch, tokens), generator=gen, device=device)
    return {
        "hidden": randn(batch, tokens, dim),
        "weight": randn(shape["vocab"], dim, std=dim**-0.5),
        "targets": targets,
    }


def _reference_call(op: str) -> Callable[..., Any]:
    return {
        "rms_norm": lambda a, f=reference.rms_norm: f(a["x"], a["weight"], 1e-5),
        "add_rms_norm": lambda a, f=reference.add_rms_norm: f(a["x"], a["delta"], a["weight"], 1e-5),
        "apply_rope": lambda a, f=reference.apply_rope: f(a["q"], a["k"], a["cos"], a["sin"]),
        "swiglu": lambda a, f=reference.swiglu: f(a["gate"], a["up"]),
        "linear_cross_entropy": lambda a, f=reference.linear_cross_entropy: f(
            a["hidden"], a["weight"], a["targets"]
        ),
        "nf4_dequantize": lambda a, f=reference.nf4_dequantize: f(
            a["codes"], a["scales"], a["levels"], 64, _nf4_shape(a), a["like"].dtype
        ),
    }[op]


def _nf4_shape(a: Inputs) -> tuple[int, int]:
    """The FFN projection's (out, in) shape, from the empty `like` tensor of the inputs."""
    return int(a["like"].shape[1]), int(a["like"].shape[2])


def herd_impl(op: str) -> Impl:
    from runtime.kernels.accuracy import fused_ops

    ops = fused_ops()
    calls: dict[str, Callable[[Inputs], Any]] = {
        "rms_norm": lambda a: ops.rms_norm(a["x"], a["weight"], 1e-5),
        "add_rms_norm": lambda a: ops.add_rms_norm(a["x"], a["delta"], a["weight"], 1e-5),
        "apply_rope": lambda a: ops.apply_rope(a["q"], a["k"], a["cos"], a["sin"]),
        "swiglu": lambda a: ops.swiglu(a["gate"], a["up"]),
        "linear_cross_entropy": lambda a: ops.linear_cross_entropy(
            a["hidden"], a["weight"], a["targets"]
        ),
        "nf4_dequantize": lambda a: ops.nf4_dequantize(
            a["codes"], a["scales"], a["levels"], 64, _nf4_shape(a), a["like"].dtype
        ),
    }
    return Impl("herd", calls[op])


def compiled_impl(op: str) -> Impl:
    fn = torch.compile(_reference_call(op), dynamic=False)
    return Impl("compile", fn)


def liger_impl(op: str) -> Impl | None:
    """Liger Kernel's op in its own layout (RoPE: (B, H, T, D) with full-width cos/sin)."""
    try:
        from liger_kernel.transformers import functional as liger
    except ImportError:
        return None

    def rope_layout(a: Inputs) -> Inputs:
        def heads_first(t: torch.Tensor) -> torch.Tensor:
            return t.detach().transpose(1, 2).contiguous().requires_grad_()

        return {
            "q": heads_first(a["q"]),
            "k": heads_first(a["k"]),
            "cos": torch.cat([a["cos"], a["cos"]], -1)[None],
            "sin": torch.cat([a["sin"], a["sin"]], -1)[None],
        }

    def flat(a: Inputs) -> Inputs:
        hidden = a["hidden"].detach().flatten(0, 1).requires_grad_()
        return {"hidden": hidden, "weight": a["weight"], "targets": a["targets"].flatten()}

    if op == "rms_norm":
        return Impl("liger", lambda a: liger.liger_rms_norm(a["x"], a["weight"], 1e-5))
    if op == "apply_rope":
        return Impl("liger", lambda a: liger.liger_rope(a["q"], a["k"], a["cos"], a["sin"]),
                    rope_layout)
    if op == "swiglu":
        return Impl("liger", lambda a: liger.liger_swiglu(a["gate"], a["up"]))
    if op != "linear_cross_entropy":
        return None  # Liger has no such op (NF4 dequantizing): no row, rather than an error row
    return Impl(
        "liger",
        lambda a: liger.liger_fused_linear_cross_entropy(a["hidden"], a["weight"], a["targets"]),
        flat,
    )


def _outputs(out: Any) -> list[torch.Tensor]:
    if isinstance(out, tuple | list):
        return [o for o in out if isinstance(o, torch.Tensor)]
    return [out]


def _step(impl: Impl, inputs: Inputs, backward: bool) -> Callable[[], None]:
    leaves = [t for t in inputs.values() if t.requires_grad]

    def run() -> None:
        outs = _outputs(impl.call(inputs))
        if backward:
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        for t in leaves:
            t.grad = None

    if not backward:
        def no_grad_run() -> None:
            with torch.no_grad():
                run()

        return no_grad_run
    return run


def time_ms(fn: Callable[[], None], device: str, reps: int) -> float:
    """Median milliseconds: Triton's do_bench (CUDA events, L2 flushed) on a GPU."""
    if device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def graph_ms(fn: Callable[[], None]) -> float:
    """Median milliseconds of the call replayed from a CUDA graph: the GPU's time alone, as a
    training step sees an op when the host runs ahead of the device. `time_ms` includes the
    host's launch work, which dominates ops of a few tenths of a millisecond."""
    import triton.testing

    return float(triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median"))


def peak_mib(fn: Callable[[], None], device: str) -> float | None:
    """Memory one call allocates beyond what was already live (CUDA only)."""
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every op's table rows; the JSON is rewritten after each op, so a run cut short (a GPU
    lease's time limit) keeps what it measured."""
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    shape = MODELS["smoke" if args.smoke else args.model]
    tokens = 64 if args.smoke else args.tokens
    rows: list[dict[str, Any]] = []
    report = {
        "benchmark": "kernels",
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "model": "smoke" if args.smoke else args.model,
        "shape": shape,
        "tokens": tokens,
        "elementwise_batch": ELEMENTWISE_BATCH,
        "torch": torch.__version__,
        "smoke": args.smoke,
        "results": rows,
    }
    for op in args.only:
        impls = [herd_impl(op), Impl("eager", _reference_call(op))]
        if not args.smoke:
            impls.append(compiled_impl(op))
            liger = liger_impl(op)
            if liger is not None:
                impls.append(liger)
        shared = make_inputs(op, shape, tokens, dtype, device)
        for backward in (False,) if op in FORWARD_ONLY else (False, True):
            label = "fwd+bwd" if backward else "fwd"
            results: dict[str, dict[str, Any]] = {}
            for impl in impls:
                try:
                    step = _step(impl, impl.prepare(shared), backward)
                    results[impl.name] = {
                        "ms": time_ms(step, device, reps=1 if args.smoke else 10),
                        "peak_mib": peak_mib(step, device),
                    }
                except Exception as exc:  # a baseline that fails is reported, not fatal
                    results[impl.name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                if device == "cuda" and args.graphs:
                    try:
                        results[impl.name]["graph_ms"] = graph_ms(step)
                    except Exception as exc:  # e.g. a host sync inside the op: not capturable
                        results[impl.name]["graph_error"] = f"{type(exc).__name__}: {exc}"[:200]
            for key in ("ms", "graph_ms"):
                herd_ms = results["herd"].get(key)
                for res in results.values():
                    if herd_ms and res.get(key):
                        res[f"{key.removesuffix('ms')}speedup_of_herd"] = res[key] / herd_ms
            for name, res in results.items():
                rows.append({"op": op, "pass": label, "impl": name, **res})
        write_result("kernels", report, args.out)
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['device']}, {report['dtype']}, Llama 3 {report['model']} shapes, "
          f"{ELEMENTWISE_BATCH} x {report['tokens']} tokens (linear+CE: 1 x {report['tokens']}); "
          "speedup = impl ms / herd ms")
    print("graph ms: the same call replayed from a CUDA graph (GPU time alone, no launch work)")
    print(f"{'op':22} {'pass':8} {'impl':8} {'ms':>9} {'speedup':>8} {'peak MiB':>9} "
          f"{'graph ms':>9} {'speedup':>8}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['op']:22} {r['pass']:8} {r['impl']:8} {r['error']}")
            continue
        peak = f"{'-':>9}" if r["peak_mib"] is None else f"{r['peak_mib']:9.1f}"
        graph = f"{'-':>9} {'-':>8}"
        if "graph_ms" in r:
            graph = f"{r['graph_ms']:9.3f} {r.get('graph_speedup_of_herd', float('nan')):8.2f}"
        print(f"{r['op']:22} {r['pass']:8} {r['impl']:8} {r['ms']:9.3f} "
              f"{r.get('speedup_of_herd', float('nan')):8.2f} {peak} {graph}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[m for m in MODELS if m != "smoke"], default="8b")
    parser.add_argument("--tokens", type=int, default=8192, help="tokens per sequence (default 8192)")
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(OPS),
                        help=f"comma-separated subset of {','.join(OPS)}")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny shapes on the CPU (needs TRITON_INTERPRET=1): checks the script")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/)")
    parser.add_argument("--no-graphs", dest="graphs", action="store_false",
                        help="skip the CUDA-graph timings (GPU time without launch work)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(OPS))
    if unknown:
        parser.error(f"unknown op(s) {', '.join(unknown)}; choose from {', '.join(OPS)}")
    if not args.smoke and not torch.cuda.is_available():
        print("kernels.py: no CUDA GPU here, and only GPU timings count; "
              "run with --smoke (and TRITON_INTERPRET=1) to check the script on the CPU",
              file=sys.stderr)
        return 2
    report = run(args)
    print_table(report)
    print(f"wrote {result_path('kernels', args.out)}")  # run() wrote it after each op
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
