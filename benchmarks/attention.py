"""Document-masked attention paths side by side: which one herd should take on a GPU.

    python benchmarks/attention.py                    # on a GPU: both shapes below, bf16
    python benchmarks/attention.py --only 1b --paths flex,varlen
    python benchmarks/attention.py --smoke            # tiny, on the CPU: checks the script only

Paths (runtime/model/attention.py; q/k/v as the model holds them, GQA without copies):

  flex         compiled FlexAttention with a block mask of the documents (herd's GPU default)
  varlen       FlashAttention's variable-length kernel, one causal sequence per document
               (`HERD_ATTENTION=varlen`)
  sdpa-causal  SDPA causal over whole rows, no document mask: the work Hugging Face's
               Llama does on packed rows (more FLOPs, a different result — timing only)
  dense        SDPA with a boolean (B, 1, T, T) document mask (herd's CPU path)

Shapes: `note`, the team's note on document-masked attention (1 x 8,192 tokens of
1,024-token documents, 32 query / 8 KV heads, head dim 128: FlexAttention took 1.03 ms
forward + backward there), and `1b`, the training step's (benchmarks/train_step.py:
8 x 4,096 tokens, documents of exponential length around 1,024, 32 / 8 heads, head dim 64).

Per path and shape: building the mask (once per batch, all layers share it), forward, and
forward + backward in median ms (Triton's do_bench on a GPU), the useful TFLOP/s (causal
attention within documents only: 4·H·D·Σ L(L+1)/2 forward, 2.5× that backward), peak memory,
and the largest error of the output against an fp32 per-document reference. Results go to
benchmarks/results/attention-<host>.json, rewritten after each shape.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.kernels import peak_mib, time_ms  # noqa: E402
from benchmarks.record import result_path, write_result  # noqa: E402
from benchmarks.train_step import make_batch  # noqa: E402
from runtime.model import attention  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "note": {"batch": 1, "seq": 8192, "doc_len": 1024, "fixed_docs": True, "heads": 32,
             "kv_heads": 8, "head_dim": 128},
    "1b": {"batch": 8, "seq": 4096, "doc_len": 1024, "fixed_docs": False, "heads": 32,
           "kv_heads": 8, "head_dim": 64},
    "smoke": {"batch": 2, "seq": 48, "doc_len": 12, "fixed_docs": False, "heads": 4,
              "kv_heads": 2, "head_dim": 16},
}
PATHS = ("flex", "varlen", "sdpa-causal", "dense")
GPU_ONLY = ("flex",)  # FlexAttention has no CPU backward


def document_ids(shape: dict[str, Any]) -> torch.Tensor:
    """(B, T) document ids: fixed-length documents, or the training step's random packing."""
    batch, seq, doc_len = shape["batch"], shape["seq"], shape["doc_len"]
    if shape["fixed_docs"]:
        return (torch.arange(seq) // doc_len).expand(batch, seq).contiguous()
    _, doc_ids, _ = make_batch(SimpleNamespace(batch=batch, seq=seq, doc_len=doc_len), 2, "cpu")
    return doc_ids


def useful_flops(doc_ids: torch.Tensor, heads: int, head_dim: int) -> float:
    """Forward FLOPs of causal attention within documents (QK^T and PV, 2 each per pair)."""
    bounds, _ = attention._document_offsets(doc_ids.cpu())
    lengths = (bounds[1:] - bounds[:-1]).double()
    return float(4 * heads * head_dim * (lengths * (lengths + 1) / 2).sum())


def qkv(shape: dict[str, Any], dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    """q (B, Hq, T, D), k and v (B, Hk, T, D) as the model hands them over: transposed views
    of (B, T, H, D) projections, leaves needing gradients."""
    g = torch.Generator(device=device).manual_seed(0)
    b, t, d = shape["batch"], shape["seq"], shape["head_dim"]

    def make(heads: int) -> torch.Tensor:
        return torch.randn(b, t, heads, d, generator=g, device=device, dtype=dtype).requires_grad_()

    return {"q": make(shape["heads"]), "k": make(shape["kv_heads"]), "v": make(shape["kv_heads"])}


def heads_first(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(1, 2)


def build_mask(path: str, doc_ids: torch.Tensor, head_dim: int) -> attention.AttentionMask:
    if path == "sdpa-causal":
        return attention.AttentionMask("causal")
    return attention.document_mask(doc_ids, path, head_dim)  # type: ignore[arg-type]


def reference_output(inputs: dict[str, torch.Tensor], doc_ids: torch.Tensor) -> torch.Tensor:
    """fp32, one SDPA call per document: what every masked path should compute."""
    mask = attention.document_mask(doc_ids, "varlen")
    with torch.no_grad():
        q, k, v = (heads_first(inputs[n].float()) for n in "qkv")
        return attention.attend(q, k, v, mask)


def measure(path: str, shape: dict[str, Any], inputs: dict[str, torch.Tensor],
            doc_ids: torch.Tensor, want: torch.Tensor, device: str, reps: int) -> dict[str, Any]:
    head_dim = shape["head_dim"]

    def make_mask() -> None:
        build_mask(path, doc_ids, head_dim)

    mask = build_mask(path, doc_ids, head_dim)

    def forward() -> torch.Tensor:
        return attention.attend(*(heads_first(inputs[n]) for n in "qkv"), mask)

    grad = torch.randn_like(want, dtype=inputs["q"].dtype)

    def fwd() -> None:
        with torch.no_grad():
            forward()

    def fwd_bwd() -> None:
        torch.autograd.backward(forward(), grad)
        for t in inputs.values():
            t.grad = None

    with torch.no_grad():
        got = forward().float()
    flops = useful_flops(doc_ids, shape["heads"], head_dim)
    row: dict[str, Any] = {"path": path, "mask_ms": time_ms(make_mask, device, reps)}
    for name, fn, work in (("fwd", fwd, flops), ("fwd+bwd", fwd_bwd, 3.5 * flops)):
        ms = time_ms(fn, device, reps)
        row[f"{name}_ms"] = ms
        row[f"{name}_tflops"] = work / (ms * 1e-3) / 1e12
    row["peak_mib"] = peak_mib(fwd_bwd, device)
    # sdpa-causal attends across documents: a different result, so no error to report
    row["max_err"] = None if path == "sdpa-causal" else float((got - want).abs().max())
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = "cuda" if torch.cuda.is_available() and not args.smoke else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    rows: list[dict[str, Any]] = []
    report = {
        "benchmark": "attention",
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "varlen_available": attention.varlen_attn is not None,
        "smoke": args.smoke,
        "shapes": {name: SHAPES[name] for name in args.only},
        "results": rows,
    }
    for name in args.only:
        shape = SHAPES[name]
        doc_ids = document_ids(shape).to(device)
        inputs = qkv(shape, dtype, device)
        want = reference_output(inputs, doc_ids)
        for path in args.paths:
            if device == "cpu" and path in GPU_ONLY:
                continue
            try:
                row = measure(path, shape, inputs, doc_ids, want, device, reps=1 if args.smoke else 10)
            except Exception as exc:  # a path that cannot run here is reported, not fatal
                row = {"path": path, "error": f"{type(exc).__name__}: {exc}"[:300]}
            rows.append({"shape": name, **row})
        write_result("attention", report, args.out)
    return report


def print_table(report: dict[str, Any]) -> None:
    print(f"{report['device']}, {report['dtype']}, torch {report['torch']}; ms are medians, "
          "TFLOP/s count attention within documents only")
    print(f"{'shape':6} {'path':12} {'mask ms':>8} {'fwd ms':>8} {'fwd+bwd ms':>11} "
          f"{'TFLOP/s':>8} {'peak MiB':>9} {'max err':>9}")
    fmt: Callable[[Any, str], str] = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in report["results"]:
        if "error" in r:
            print(f"{r['shape']:6} {r['path']:12} {r['error']}")
            continue
        print(f"{r['shape']:6} {r['path']:12} {r['mask_ms']:8.3f} {r['fwd_ms']:8.3f} "
              f"{r['fwd+bwd_ms']:11.3f} {r['fwd+bwd_tflops']:8.1f} {fmt(r['peak_mib'], '9.1f'):>9} "
              f"{fmt(r['max_err'], '9.2e'):>9}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", type=lambda s: s.split(","), default=None,
                        help="comma-separated shapes (note, 1b; default both)")
    parser.add_argument("--paths", type=lambda s: s.split(","), default=list(PATHS),
                        help=f"comma-separated subset of {','.join(PATHS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    args.only = args.only or (["smoke"] if args.smoke else ["note", "1b"])
    for given, known, what in ((args.only, SHAPES, "shape"), (args.paths, PATHS, "path")):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {what}(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    if not args.smoke and not torch.cuda.is_available():
        print("attention.py: no CUDA GPU here, and only GPU timings count; "
              "run with --smoke to check the script on the CPU", file=sys.stderr)
        return 2
    report = run(args)
    print_table(report)
    print(f"wrote {result_path('attention', args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
