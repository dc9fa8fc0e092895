"""Compile every Triton kernel for a GPU on a machine that has none.

The CPU tests run the kernels through Triton's interpreter, which never lowers them to GPU
code: a kernel that only fails in the GPU compiler (an op with no bf16 lowering, a block
too large for the registers, too much shared memory) passes every CPU test and fails at
its first launch on a GPU. This module catches that class of bug without a GPU:

1. it calls the real kernel wrappers, forward and backward, at Llama 3 widths in the
   dtype mixes training uses, with each Triton kernel swapped for a recorder, so what is
   compiled is exactly what the wrappers would launch (arguments, block sizes, warps);
2. it compiles each distinct launch for the target (default sm_90: H100/H200) with
   Triton's own compiler and `ptxas`, and reads registers, spills and shared memory
   from `ptxas -v`.

    python -m runtime.kernels.compile_check            # table; exit 1 if any launch fails
    python -m runtime.kernels.compile_check --json out.json --capability 80

Run it without TRITON_INTERPRET: under the interpreter `@triton.jit` gives objects that
cannot be compiled (the test runs it in a subprocess for that reason).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import triton

from runtime.kernels.fused import linear_cross_entropy as ce_module
from runtime.kernels.fused import nf4 as nf4_module
from runtime.kernels.fused import rms_norm as rms_module
from runtime.kernels.fused import rope as rope_module
from runtime.kernels.fused import swiglu as swiglu_module

KERNEL_MODULES = (rms_module, rope_module, swiglu_module, ce_module, nf4_module)

# Hopper's per-block limit of shared memory (227 KiB); registers are 255 per thread.
MAX_SHARED_BYTES = 227 * 1024

# Widths that decide block sizes: (dim, ffn, heads, kv_heads, vocab).
WIDTHS: dict[str, tuple[int, int, int, int, int]] = {
    "llama3-1b": (2048, 8192, 32, 8, 128_256),
    "llama3-8b": (4096, 14336, 32, 8, 128_256),
    "llama3-70b": (8192, 28672, 64, 8, 128_256),
    "llama3-405b": (16384, 53248, 128, 8, 128_256),
}

# (activations, parameters): pure bf16 weights; bf16 autocast over fp32 weights (the
# residual stream and norms stay fp32, projections come out bf16); fp32 evaluation.
DTYPE_MIXES: dict[str, tuple[torch.dtype, torch.dtype]] = {
    "bf16": (torch.bfloat16, torch.bfloat16),
    "autocast": (torch.bfloat16, torch.float32),
    "fp32": (torch.float32, torch.float32),
}

_TYPE_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32",
               torch.float64: "fp64", torch.uint8: "u8", torch.int64: "i64", torch.int32: "i32", torch.bool: "i1"}


@dataclass
class Launch:
    """One kernel launch as the wrapper made it, reduced to what the compiler specialises on."""

    kernel: str
    fn: Any = field(repr=False)
    signature: dict[str, str]
    constexprs: dict[str, Any]
    attrs: dict[tuple[int, ...], list[list[Any]]] = field(repr=False)
    num_warps: int
    num_stages: int
    context: str  # where it came from, e.g. "llama3-8b autocast rms_norm backward"

    def key(self) -> tuple[Any, ...]:
        return (self.kernel, tuple(self.signature.items()),
                tuple(sorted(self.constexprs.items())), self.num_warps, self.num_stages,
                tuple(sorted((k, str(v)) for k, v in self.attrs.items())))


def _describe(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[
        dict[str, str], dict[str, Any], dict[tuple[int, ...], list[list[Any]]]]:
    """Triton's specialisation of one call: argument types, constants and alignment hints.

    Mirrors the JIT: ints equal to 1 become constants, pointers and ints divisible by 16
    carry the divisibility hint, ints past 32 bits are i64."""
    names = list(fn.arg_names)
    values = dict(zip(names, args, strict=False))
    values.update({k: v for k, v in kwargs.items() if k in names})
    signature: dict[str, str] = {}
    constexprs: dict[str, Any] = {}
    attrs: dict[tuple[int, ...], list[list[Any]]] = {}
    for i, (name, param) in enumerate(zip(names, fn.params, strict=True)):
        value = values[name]
        if param.is_constexpr:
            signature[name], constexprs[name] = "constexpr", value
        elif isinstance(value, torch.Tensor):
            signature[name] = "*" + _TYPE_NAMES[value.dtype]
            if value.data_ptr() % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            if value == 1:
                signature[name], constexprs[name] = "constexpr", 1
                continue
            signature[name] = "i32" if -(2**31) <= value < 2**31 else "i64"
            if value % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{fn.__name__}: cannot describe argument {name}={value!r}")
    return signature, constexprs, attrs


class _Recorder:
    """Stands in for a JITFunction: `kernel[grid](...)` records the call instead of running."""

    def __init__(self, fn: Any, sink: list[Launch], context: Callable[[], str]) -> None:
        self.fn, self.sink, self.context = fn, sink, context

    def __getitem__(self, grid: Any) -> Callable[..., None]:
        def launch(*args: Any, **kwargs: Any) -> None:
            signature, constexprs, attrs = _describe(self.fn, args, kwargs)
            self.sink.append(Launch(
                self.fn.__name__, self.fn, signature, constexprs, attrs,
                int(kwargs.get("num_warps", 4)), int(kwargs.get("num_stages", 3)),
                self.context()))
        return launch


def _jit_functions(module: Any) -> dict[str, Any]:
    return {name: obj for name, obj in vars(module).items()
            if isinstance(obj, triton.runtime.jit.JITFunction)}


@contextmanager
def recording(sink: list[Launch], context: Callable[[], str]) -> Iterator[None]:
    """Swap every launched kernel of the fused modules for a recorder, and back."""
    saved = [(m, name, fn) for m in KERNEL_MODULES for name, fn in _jit_functions(m).items()]
    if not saved:
        raise RuntimeError("no compilable Triton kernels found: is TRITON_INTERPRET set? "
                           "run this module without it")
    try:
        for module, name, fn in saved:
            setattr(module, name, _Recorder(fn, sink, context))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def _exercise(width: str, mix: str, note: Callable[[str], None]) -> None:
    """Forward and backward of every fused op at `width` (few rows: rows never change how
    a kernel compiles, widths and dtypes do)."""
    dim, ffn, heads, kv_heads, vocab = WIDTHS[width]
    act, param = DTYPE_MIXES[mix]
    head_dim = dim // heads
    rows = 4

    def leaf(*shape: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.zeros(*shape, dtype=dtype).requires_grad_()

    # The residual stream is in the parameters' dtype (autocast leaves it fp32); the norm
    # hands its matmuls the activations' dtype (bf16 under autocast), and gets it back.
    note("rms_norm")
    y = rms_module.rms_norm(leaf(rows, dim, dtype=param), leaf(dim, dtype=param), out_dtype=act)
    y.backward(torch.zeros_like(y))
    note("add_rms_norm")  # a block's stream plus its attention output, then the FFN's norm
    h, y = rms_module.add_rms_norm(leaf(rows, dim, dtype=param), leaf(rows, dim, dtype=act),
                                   leaf(dim, dtype=param), out_dtype=act)
    torch.autograd.backward((h, y), (torch.zeros_like(h), torch.zeros_like(y)))
    note("apply_rope")
    q, k = leaf(1, rows, heads, head_dim, dtype=act), leaf(1, rows, kv_heads, head_dim, dtype=act)
    cos = torch.zeros(rows, head_dim // 2)
    qo, ko = rope_module.apply_rope(q, k, cos, cos.clone())
    torch.autograd.backward((qo, ko), (torch.zeros_like(qo), torch.zeros_like(ko)))
    # per-sequence tables (decoding at different positions); a loss that reaches q only
    table = torch.zeros(1, rows, head_dim // 2)
    qo, _ = rope_module.apply_rope(q, k, table, table.clone())
    qo.backward(torch.zeros_like(qo))
    note("swiglu")  # gate and up: the two halves of one fused projection, strided views
    gate_up = leaf(rows, 2 * ffn, dtype=act)
    y = swiglu_module.swiglu(gate_up[:, :ffn], gate_up[:, ffn:])
    y.backward(torch.zeros_like(y))
    y = swiglu_module.swiglu_packed(gate_up)  # the model's: the gradient written as one tensor
    y.backward(torch.zeros_like(y))
    note("linear_cross_entropy")
    hidden, weight = leaf(rows, 64, dtype=param), leaf(vocab, 64, dtype=param)
    targets = torch.zeros(rows, dtype=torch.long)
    with torch.no_grad():  # evaluation: losses only
        ce_module.linear_cross_entropy(hidden, weight, targets)
    ce_module.linear_cross_entropy(hidden, weight, targets).backward()
    note("nf4_dequantize")  # QLoRA's frozen FFN projection, in the matmul's dtype
    blocks = ffn * dim // 64
    nf4_module.nf4_dequantize(torch.zeros(blocks * 32, dtype=torch.uint8), torch.zeros(blocks),
                              torch.zeros(16), 64, (ffn, dim), act)


def record_launches(widths: list[str] | None = None, mixes: list[str] | None = None) -> list[Launch]:
    """Every distinct launch the wrappers make over the widths and dtype mixes."""
    launches: list[Launch] = []
    where = {"text": ""}
    with recording(launches, lambda: where["text"]):
        for width in widths or list(WIDTHS):
            for mix in mixes or list(DTYPE_MIXES):
                def note(op: str, width: str = width, mix: str = mix) -> None:
                    where["text"] = f"{width} {mix} {op}"
                _exercise(width, mix, note)
    unique: dict[tuple[Any, ...], Launch] = {}
    for launch in launches:
        unique.setdefault(launch.key(), launch)
    return list(unique.values())


@dataclass
class Compiled:
    kernel: str
    context: str
    signature: str
    constexprs: dict[str, Any]
    num_warps: int
    registers: int | None = None
    spill_bytes: int | None = None
    shared_bytes: int | None = None
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and not self.spill_bytes
                and (self.shared_bytes or 0) <= MAX_SHARED_BYTES)


_PTXAS_USED = re.compile(r"Used (\d+) registers")
_PTXAS_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _ptxas_report(ptx: str, capability: int) -> tuple[int | None, int | None]:
    """(registers, spilled bytes) from `ptxas -v`, with the ptxas Triton ships."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        done = subprocess.run(
            [get_ptxas(capability).path, "-v", f"--gpu-name={sm_arch_from_capability(capability)}",
             str(src), "-o", str(Path(tmp) / "k.o")],
            capture_output=True, text=True, check=True)
    used, spill = _PTXAS_USED.search(done.stderr), _PTXAS_SPILL.search(done.stderr)
    return (int(used.group(1)) if used else None,
            int(spill.group(1)) + int(spill.group(2)) if spill else None)


def compile_launch(launch: Launch, capability: int) -> Compiled:
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    typed = ", ".join(f"{k}:{v}" for k, v in launch.signature.items() if v != "constexpr")
    result = Compiled(launch.kernel, launch.context, typed,
                      {k: v for k, v in launch.constexprs.items()}, launch.num_warps)
    start = time.perf_counter()
    try:
        source = ASTSource(launch.fn, launch.signature, constexprs=launch.constexprs,
                           attrs=launch.attrs)
        compiled = triton.compile(
            source, target=GPUTarget("cuda", capability, 32),
            options={"num_warps": launch.num_warps, "num_stages": launch.num_stages})
        result.shared_bytes = int(compiled.metadata.shared)
        result.registers, result.spill_bytes = _ptxas_report(compiled.asm["ptx"], capability)
    except Exception as exc:  # noqa: BLE001 - every compiler failure is a finding to report
        result.error = f"{type(exc).__name__}: {str(exc).strip()[:2000]}"
    result.seconds = time.perf_counter() - start
    return result


def check(capability: int = 90, widths: list[str] | None = None,
          mixes: list[str] | None = None) -> list[Compiled]:
    return [compile_launch(launch, capability) for launch in record_launches(widths, mixes)]


def _table(results: list[Compiled]) -> str:
    lines = [f"{'kernel':16} {'first seen at':40} {'warps':>5} {'regs':>5} {'spill':>6} "
             f"{'smem':>7} {'s':>5}  ok"]
    for r in results:
        consts = " ".join(k if v is True else f"{k}={v}" for k, v in r.constexprs.items()
                          if k.isupper() and v is not False)
        lines.append(
            f"{r.kernel:16} {r.context:40} {r.num_warps:5} {r.registers or '-':>5} "
            f"{r.spill_bytes if r.spill_bytes is not None else '-':>6} "
            f"{r.shared_bytes if r.shared_bytes is not None else '-':>7} {r.seconds:5.1f}  "
            f"{'yes' if r.ok else 'NO'}  {consts}")
        if r.error:
            lines.append("    " + r.error.splitlines()[0])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capability", type=int, default=90,
                        help="compute capability to compile for (90: H100/H200, 80: A100)")
    parser.add_argument("--width", action="append", choices=list(WIDTHS),
                        help="model widths to cover (default: all)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        results = check(args.capability, args.width)
    except RuntimeError as exc:
        print(f"compile_check: {exc}", file=sys.stderr)
        return 2
    print(_table(results))
    failed = [r for r in results if not r.ok]
    print(f"{len(results)} distinct launches compiled for sm_{args.capability} with Triton "
          f"{triton.__version__} in {time.perf_counter() - started:.1f} s; "
          f"{len(failed)} failed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(
            {"capability": args.capability, "triton": triton.__version__,
             "torch": torch.__version__,
             "launches": [asdict(r) | {"ok": r.ok} for r in results]}, indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
