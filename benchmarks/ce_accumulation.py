"""How much accuracy the fused cross-entropy's weight gradient loses per chunk in bf16.

The weight gradient sums over every token; chunked, its running sum is either kept in bf16
(rounded once per chunk, no extra memory) or in fp32 (a 4-byte-per-weight buffer). This
measures herd's d_weight error against fp64, over plain torch's bf16 error (the accuracy
rule's ratio, which must stay <= 2), for both accumulators and several chunk counts:

    python benchmarks/ce_accumulation.py                   # 8,192 tokens x 16,384 vocab, ~5 min
    python benchmarks/ce_accumulation.py --tokens 2048     # quicker

It runs on the CPU, where Triton's interpreter stores bf16 by truncation rather than by
rounding to nearest as a GPU does; so the per-row kernel is replaced here by the same math
in torch (rounded to nearest), and an fp32 accumulator adds bf16 products unrounded as
`addmm(out_dtype=float32)` does on a GPU. Everything else is herd's own chunked pass. It
justifies MAX_CHUNKS_IN_WEIGHT_DTYPE in runtime/kernels/fused/linear_cross_entropy.py.
Writes benchmarks/results/ce_accumulation-<host>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.record import write_result  # noqa: E402
from runtime.kernels import accuracy  # noqa: E402
from runtime.kernels.fused import linear_cross_entropy as lce  # noqa: E402


class _RowsInTorch:
    """`_ce_rows[grid](...)` with the kernel's math in torch, rounding to nearest on store."""

    def __getitem__(self, grid: tuple[int]):
        def launch(logits, targets, losses, scale, _stride, _n_vocab, ignore_index,
                   WRITE_GRAD: bool, **_launch) -> None:  # noqa: N803 (the kernel's names)
            z = logits.float()
            lse = torch.logsumexp(z, dim=1)
            ignored = targets == ignore_index
            picked = z.gather(1, targets.clamp(min=0)[:, None])[:, 0]
            losses.copy_(torch.where(ignored, 0.0, lse - picked))
            if WRITE_GRAD:
                grad = torch.exp(z - lse[:, None])
                rows = (~ignored).nonzero()[:, 0]
                grad[rows, targets[rows]] -= 1.0
                logits.copy_((grad * scale[:, None]).to(logits.dtype))

        return launch


def _accumulate_like_a_gpu(acc, a, b, first: bool) -> None:
    if acc.dtype == a.dtype:
        torch.mm(a, b, out=acc) if first else acc.addmm_(a, b)
    else:  # fp32 accumulator: bf16 x bf16 products added unrounded
        acc.add_(a.float() @ b.float())


def measure(tokens: int, dim: int, vocab: int, chunks: int, accumulator: str) -> dict:
    lce.MAX_CHUNKS_IN_WEIGHT_DTYPE = 10**9 if accumulator == "bf16" else 0
    rows = tokens // chunks
    ops = SimpleNamespace(linear_cross_entropy=lambda h, w, t: lce.linear_cross_entropy(
        h, w, t, chunk_rows=rows))
    case = next(c for c in accuracy.llama_cases(tokens, dim, 4 * dim, 8, 2, vocab)
                if c.name == "linear_cross_entropy[mean]")
    m = next(m for m in accuracy.measure(case, ops, torch.bfloat16, "cpu")
             if m.quantity == "d_weight")
    return {"tokens": tokens, "dim": dim, "vocab": vocab, "chunks": chunks,
            "accumulator": accumulator, "herd_error": m.herd_error,
            "torch_error": m.torch_error, "ratio": m.ratio}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=16384)
    ap.add_argument("--chunks", default="1,4,8,16")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    lce._ce_rows = _RowsInTorch()
    lce._accumulate_mm = _accumulate_like_a_gpu
    results = []
    print(f"{'chunks':>6} {'acc':>5} {'herd err':>10} {'torch err':>10} {'ratio':>6}")
    for chunks in (int(c) for c in args.chunks.split(",")):
        for accumulator in ("bf16", "fp32"):
            r = measure(args.tokens, args.dim, args.vocab, chunks, accumulator)
            results.append(r)
            print(f"{chunks:6d} {accumulator:>5} {r['herd_error']:10.3e} "
                  f"{r['torch_error']:10.3e} {r['ratio']:6.2f}", flush=True)
    path = write_result("ce_accumulation", {"results": results}, args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
