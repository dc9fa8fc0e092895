"""The GPU acceptance check of herd's Triton kernels: bf16 accuracy, then the speed table.

    python benchmarks/gpu_check.py                    # on a GPU: Llama 3 8B shapes, 8K tokens
    python benchmarks/gpu_check.py --no-speed         # accuracy only (about a minute)
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --smoke   # fp32 on the CPU: checks the script

Accuracy follows runtime/kernels/accuracy.py: for each kernel's output and every gradient,
herd's relative L2 error against an fp64 ground truth must be at most 2x that of the torch
reference in bf16 on the same rounded inputs. Each line prints both errors and their
ratio. With speed on, benchmarks/kernels.py then runs on the same shape. Results go to
benchmarks/results/gpu_check-<hostname>.json; the exit status is 1 if any check failed.
It is one short script so that a rented GPU's minutes go to measuring, not to setup.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import kernels as kernel_bench  # noqa: E402

from benchmarks.record import result_path, write_result  # noqa: E402
from runtime.kernels import backend_for  # noqa: E402
from runtime.kernels.accuracy import ALLOWED_RATIO, fused_ops, llama_cases, measure  # noqa: E402


def accuracy(model: str, tokens: int, smoke: bool) -> list[dict[str, Any]]:
    shape = kernel_bench.MODELS["smoke" if smoke else model]
    device, dtype = ("cpu", torch.float32) if smoke else ("cuda", torch.bfloat16)
    cases = llama_cases(
        tokens=24 if smoke else tokens, dim=shape["dim"], ffn_dim=shape["ffn"],
        heads=shape["heads"], kv_heads=shape["kv_heads"], vocab=shape["vocab"],
    )
    floor = torch.finfo(torch.float32).eps if smoke else 0.0
    rows = []
    print(f"accuracy ({str(dtype).removeprefix('torch.')}; pass: herd error <= "
          f"{ALLOWED_RATIO:g} x torch error{' + 1 fp32 eps' if smoke else ''})")
    print(f"{'case':28} {'quantity':10} {'herd err':>10} {'torch err':>10} {'ratio':>6}  ok")
    for case in cases:
        start = time.perf_counter()
        for m in measure(case, fused_ops(), dtype, device, noise_floor=floor):
            print(f"{m.case:28} {m.quantity:10} {m.herd_error:10.3e} {m.torch_error:10.3e} "
                  f"{m.ratio:6.2f}  {'yes' if m.ok else 'NO'}")
            rows.append({"case": m.case, "quantity": m.quantity, "herd_error": m.herd_error,
                         "torch_error": m.torch_error, "ratio": m.ratio, "ok": m.ok})
        print(f"  ({case.name}: {time.perf_counter() - start:.1f} s)")
        if device == "cuda":
            torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["8b", "70b", "405b"], default="8b")
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--no-speed", action="store_true", help="skip the speed table")
    parser.add_argument("--smoke", action="store_true",
                        help="fp32 on the CPU at tiny shapes (needs TRITON_INTERPRET=1)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA GPU here; run with --smoke (and TRITON_INTERPRET=1) "
              "to check the script on the CPU", file=sys.stderr)
        return 2
    probe = torch.zeros(1, device="cpu" if args.smoke else "cuda")
    report: dict[str, Any] = {
        "benchmark": "gpu_check",
        "device": "cpu" if args.smoke else torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "model": args.model,
        "tokens": args.tokens,
        "smoke": args.smoke,
        "dispatch": backend_for(probe) if not args.smoke else "n/a",
        "accuracy": accuracy(args.model, args.tokens, args.smoke),
    }
    write_result("gpu_check", report, args.out)  # the accuracy half survives a speed run cut short
    if not args.no_speed:
        speed_args = ["--model", args.model, "--tokens", str(args.tokens)]
        speed_args += ["--smoke"] if args.smoke else []
        out = result_path("kernels")
        if args.out:  # the speed table lands beside the check's own file
            out = Path(args.out).with_name(out.name)
        kernel_bench.main([*speed_args, "--out", str(out)])
        report["speed"] = json.loads(out.read_text())["results"]
    passed = all(r["ok"] for r in report["accuracy"])
    report["passed"] = passed
    out = write_result("gpu_check", report, args.out)
    print(f"{'PASSED' if passed else 'FAILED'}: wrote {out}")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
