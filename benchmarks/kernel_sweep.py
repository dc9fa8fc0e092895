"""Launch settings of herd's Triton kernels, timed one by one: which tile and warp counts win.

    python benchmarks/kernel_sweep.py                 # on a GPU: Llama 3 8B shapes, bf16
    TRITON_INTERPRET=1 python benchmarks/kernel_sweep.py --smoke   # tiny, CPU: checks the script

benchmarks/kernels.py times each op as users call it (forward, forward + backward) against
its peers; this script times each *kernel* alone under several launch settings, so that a
short GPU lease also tells which settings to keep when a kernel misses its target. Each row
is one kernel and one setting: median ms (Triton's do_bench) and the bandwidth it reached
counting the bytes the kernel must move, and (last) the fused loss as a whole by tokens per
chunk, with its peak memory, at the 8B kernel shape and at the 1B training step's. The setting the runtime uses today is marked `*`. Results go
to benchmarks/results/kernel_sweep-<host>.json, rewritten after each kernel.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
import triton

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.kernels import peak_mib, time_ms  # noqa: E402
from benchmarks.record import result_path, write_result  # noqa: E402
from runtime.kernels.accuracy import rope_tables  # noqa: E402
from runtime.kernels.fused import linear_cross_entropy as lce  # noqa: E402
from runtime.kernels.fused import rms_norm as rms  # noqa: E402
from runtime.kernels.fused import rope  # noqa: E402
from runtime.kernels.fused import swiglu as swi  # noqa: E402
from runtime.kernels.fused._launch import persistent_programs, row_block  # noqa: E402

# rows x width of each kernel's operands (the 8B shapes; --smoke shrinks them)
FULL = {"rows": 16384, "dim": 4096, "ffn": 14336, "heads": 32, "kv_heads": 8, "head_dim": 128,
        "ce_rows": 2048, "vocab": 128_256}
SMOKE = {"rows": 6, "dim": 96, "ffn": 160, "heads": 4, "kv_heads": 2, "head_dim": 16,
         "ce_rows": 3, "vocab": 700}


def sweep_rms_norm(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    x = torch.randn(s["rows"], s["dim"], device=device, dtype=dtype)
    w = torch.randn(s["dim"], device=device, dtype=dtype)
    dy, y, dx = torch.randn_like(x), torch.empty_like(x), torch.empty_like(x)
    rstd = torch.empty(s["rows"], device=device, dtype=torch.float32)
    block, warps_now = row_block(s["dim"])
    moved = 2 * x.numel() * x.element_size()
    for warps in (2, 4, 8, 16):
        def fwd(warps: int = warps) -> None:
            rms._rms_norm_fwd[(s["rows"],)](x, x, x, w, y, rstd, x.stride(0), x.stride(0), x.stride(0),
                                            y.stride(0), s["dim"], 1e-5, HAS_DELTA=False,
                                            BLOCK=block, num_warps=warps)
        yield "rms_norm_fwd", f"warps={warps}", warps == warps_now, fwd, moved
    per_sm_now = 2
    for warps in (4, 8, 16):
        for per_sm in (1, 2, 4, 8) if not smoke else (1,):
            programs = persistent_programs(x.device, s["rows"], per_sm=per_sm)
            partial = torch.empty(programs, s["dim"], device=device, dtype=torch.float32)

            def bwd(warps: int = warps, programs: int = programs, partial: torch.Tensor = partial) -> None:
                rms._rms_norm_bwd[(programs,)](dy, x, w, rstd, dx, partial, dy, dx, dy.stride(0),
                                               x.stride(0), dx.stride(0), dy.stride(0), dx.stride(0),
                                               s["rows"], s["dim"], triton.cdiv(s["rows"], programs),
                                               HAS_DH=False, HAS_DDELTA=False,
                                               BLOCK=block, num_warps=warps)
                partial.sum(0)
            yield ("rms_norm_bwd", f"warps={warps} per_sm={per_sm}",
                   warps == warps_now and per_sm == per_sm_now, bwd, 3 * moved // 2)


def sweep_swiglu(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    g = torch.randn(s["rows"], s["ffn"], device=device, dtype=dtype)
    u, dy = torch.randn_like(g), torch.randn_like(g)
    y, dg, du = torch.empty_like(g), torch.empty_like(g), torch.empty_like(g)
    n = s["ffn"]
    size = g.numel() * g.element_size()
    for block, warps in ((512, 4), (1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (4096, 16)):
        grid = (s["rows"], triton.cdiv(n, block))
        now = block == swi._BLOCK and warps == 4

        def fwd(block: int = block, warps: int = warps, grid: tuple[int, int] = grid) -> None:
            swi._swiglu_fwd[grid](g, u, y, g.stride(0), u.stride(0), y.stride(0), n,
                                  BLOCK=block, num_warps=warps)

        def bwd(block: int = block, warps: int = warps, grid: tuple[int, int] = grid) -> None:
            swi._swiglu_bwd[grid](dy, g, u, dg, du, dy.stride(0), g.stride(0), u.stride(0),
                                  dg.stride(0), du.stride(0), n, BLOCK=block, num_warps=warps)
        yield "swiglu_fwd", f"block={block} warps={warps}", now, fwd, 3 * size
        yield "swiglu_bwd", f"block={block} warps={warps}", now, bwd, 5 * size


def sweep_rope(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    batch, seq = 2, s["rows"] // 2
    q = torch.randn(batch, seq, s["heads"], s["head_dim"], device=device, dtype=dtype)
    k = torch.randn(batch, seq, s["kv_heads"], s["head_dim"], device=device, dtype=dtype)
    cos, sin = (t.to(device) for t in rope_tables(seq, s["head_dim"]))
    warps_now = rope._warps(s["heads"], s["head_dim"] // 2)
    moved = 2 * (q.numel() + k.numel()) * q.element_size()
    original = rope._warps
    for warps in (1, 2, 4, 8, 16):
        def call(warps: int = warps) -> None:
            rope._warps = lambda *_: warps  # type: ignore[assignment]
            try:
                rope._rotate(q, k, cos, sin, inverse=False)
            finally:
                rope._warps = original
        yield "rope", f"warps={warps}", warps == warps_now, call, moved


def sweep_ce(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    rows, vocab = s["ce_rows"], s["vocab"]
    logits = torch.randn(rows, vocab, device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (rows,), device=device)
    loss = torch.empty(rows, device=device, dtype=torch.float32)
    scale = torch.full((rows,), 1.0 / rows, device=device)
    moved = 3 * logits.numel() * logits.element_size()  # read twice, write once
    for block in (1024, 2048, 4096, 8192):
        for warps in (4, 8, 16):
            def call(block: int = block, warps: int = warps) -> None:
                lce._ce_rows[(rows,)](logits, targets, loss, scale, logits.stride(0), vocab, -100,
                                      WRITE_GRAD=True, BLOCK_V=min(block, triton.next_power_of_2(vocab)),
                                      num_warps=warps)
            yield "ce_rows", f"block={block} warps={warps}", block == lce._BLOCK_V and warps == 8, call, moved


def sweep_lce_chunks(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    """The whole fused loss, forward + backward, by tokens per chunk: fewer chunks mean fewer
    read-modify-writes of the weight gradient but a larger buffer of logits."""
    tokens = 4 * s["ce_rows"]
    hidden = torch.randn(tokens, s["dim"], device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(s["vocab"], s["dim"], device=device, dtype=dtype) * s["dim"] ** -0.5).requires_grad_()
    targets = torch.randint(0, s["vocab"], (tokens,), device=device)
    now = lce.default_chunk_rows(tokens, s["vocab"], hidden.element_size())
    fractions = (8, 4, 3, 2) if not smoke else (4, 2)
    for chunk_rows in sorted({-(-tokens // n) for n in fractions} | {now}):
        def call(chunk_rows: int = chunk_rows) -> None:
            lce.linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows).backward()
            hidden.grad = weight.grad = None
        yield "lce_fwd_bwd", f"chunk_rows={chunk_rows}", chunk_rows == now, call, None


def sweep_lce_train(s: dict[str, int], dtype: torch.dtype, device: str, smoke: bool):
    """The fused loss as benchmarks/train_step.py runs it (Llama-3.2-1B: 32,768 tokens x 2,048
    x 128,256, bf16 autocast over an fp32 master weight, so the weight gradient accumulates in
    fp32 over 16 chunks at today's bound), by tokens per chunk. The setting names the
    accumulation: `addmm` adds each bf16 product into fp32 inside the matmul (torch's
    `out_dtype`), `add` rounds each product to bf16 and adds it in a second pass."""
    tokens, dim = (8 * s["ce_rows"], s["dim"]) if smoke else (32768, 2048)
    hidden = torch.randn(tokens, dim, device=device, dtype=dtype, requires_grad=True)
    weight = (torch.randn(s["vocab"], dim, device=device) * dim**-0.5).requires_grad_()
    targets = torch.randint(0, s["vocab"], (tokens,), device=device)
    now = lce.default_chunk_rows(tokens, s["vocab"], hidden.element_size())
    accumulate = "addmm" if lce._mixed_addmm(hidden.device) else "add"
    for chunk_rows in sorted({now, 2 * now, 4 * now}):
        def call(chunk_rows: int = chunk_rows) -> None:
            with torch.autocast(device, dtype=dtype, enabled=not smoke):
                loss = lce.linear_cross_entropy(hidden, weight, targets, chunk_rows=chunk_rows)
            loss.backward()
            hidden.grad = weight.grad = None
        yield ("lce_train", f"chunk_rows={chunk_rows} {accumulate}", chunk_rows == now, call, None)


SWEEPS = {"rms_norm": sweep_rms_norm, "swiglu": sweep_swiglu, "rope": sweep_rope, "ce": sweep_ce,
          "lce_chunks": sweep_lce_chunks, "lce_train": sweep_lce_train}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (TRITON_INTERPRET=1)")
    parser.add_argument("--only", type=lambda v: v.split(","), default=list(SWEEPS))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only) - set(SWEEPS))
    if unknown:
        parser.error(f"unknown sweep(s) {', '.join(unknown)}; choose from {', '.join(SWEEPS)}")
    if not args.smoke and not torch.cuda.is_available():
        print("kernel_sweep.py: no CUDA GPU here; use --smoke with TRITON_INTERPRET=1", file=sys.stderr)
        return 2
    device, dtype = ("cpu", torch.float32) if args.smoke else ("cuda", torch.bfloat16)
    shape = SMOKE if args.smoke else FULL
    rows: list[dict[str, Any]] = []
    report = {"benchmark": "kernel_sweep", "device": "cpu" if args.smoke else torch.cuda.get_device_name(),
              "dtype": str(dtype).removeprefix("torch."), "shape": shape, "results": rows}
    print(f"{'kernel':14} {'setting':22} {'ms':>8} {'GB/s':>7} {'peak MiB':>9}")
    for name in args.only:
        for kernel, setting, current, fn, moved in SWEEPS[name](shape, dtype, device, args.smoke):
            try:
                ms = time_ms(fn, device, reps=1)
                peak = peak_mib(fn, device)
                row = {"kernel": kernel, "setting": setting, "current": current, "ms": ms,
                       "gb_per_s": moved / ms / 1e6 if moved else None, "peak_mib": peak}
                bandwidth = f"{row['gb_per_s']:7.0f}" if moved else f"{'-':>7}"
                peak_text = f"{peak:9.0f}" if peak is not None else f"{'-':>9}"
                print(f"{kernel:14} {setting + (' *' if current else ''):22} {ms:8.3f} {bandwidth} {peak_text}")
            except Exception as exc:  # a setting that fails to compile is a finding, not a stop
                row = {"kernel": kernel, "setting": setting, "current": current,
                       "error": f"{type(exc).__name__}: {exc}"[:200]}
                print(f"{kernel:14} {setting:22} error: {row['error']}")
            rows.append(row)
        write_result("kernel_sweep", report, args.out)
    print(f"wrote {result_path('kernel_sweep', args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
