"""The accuracy rule the kernels are held to, as code shared by tests and the GPU check.

A kernel is as accurate as plain torch if, for every output and every gradient, its
error against an fp64 ground truth is at most twice the error of the torch reference
run in the same precision on the same (already rounded) inputs. This is a relative
rule on purpose: bf16 results are never equal to anything, and a fixed tolerance is
either too loose for RoPE or too tight for a 128K-way softmax. The error is the relative
L2 norm, ||y - truth|| / ||truth||, which a single unlucky element cannot dominate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

from runtime.kernels import reference

# herd's error may be this many times torch's error in the same precision.
ALLOWED_RATIO = 2.0

Ops = ModuleType | SimpleNamespace
Inputs = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Case:
    """One kernel call to check: how to make its inputs and how to call it on an `Ops`."""

    name: str
    make: Callable[[torch.Generator], Inputs]  # fp32 values on the CPU (ids stay integer)
    call: Callable[[Ops, Inputs], torch.Tensor | tuple[torch.Tensor, ...]]
    grads: tuple[str, ...]  # inputs whose gradients are checked
    keep_fp32: tuple[str, ...] = ()  # inputs that stay fp32 whatever the checked precision


@dataclass(frozen=True)
class Measurement:
    case: str
    quantity: str  # "out", or "d_<input>"
    herd_error: float
    torch_error: float
    noise_floor: float = 0.0


    @property
    def ratio(self) -> float:
        if self.torch_error == 0.0:
            return 1.0 if self.herd_error == 0.0 else math.inf
        return self.herd_error / self.torch_error

    @property
    def ok(self) -> bool:
        return self.herd_error <= ALLOWED_RATIO * self.torch_error + self.noise_floor


def fused_ops() -> SimpleNamespace:
    """The Triton implementations, under the reference module's function names."""
    from runtime.kernels.fused.linear_cross_entropy import linear_cross_entropy
    from runtime.kernels.fused.nf4 import nf4_dequantize
    from runtime.kernels.fused.rms_norm import add_rms_norm, rms_norm
    from runtime.kernels.fused.rope import apply_rope
    from runtime.kernels.fused.swiglu import swiglu, swiglu_packed

    return SimpleNamespace(
        rms_norm=rms_norm,
        add_rms_norm=add_rms_norm,
        apply_rope=apply_rope,
        swiglu=swiglu,
        swiglu_packed=swiglu_packed,
        linear_cross_entropy=linear_cross_entropy,
        nf4_dequantize=nf4_dequantize,
    )


def rope_tables(seq_len: int, head_dim: int, theta: float = 500_000.0) -> tuple[torch.Tensor, ...]:
    """fp32 cos/sin tables (T, D/2) for positions 0..T-1, as Llama 3 builds them."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos().float(), angles.sin().float()


def llama_cases(
    tokens: int, dim: int, ffn_dim: int, heads: int, kv_heads: int, vocab: int, batch: int = 1
) -> list[Case]:
    """The seven checked calls at the given model shape (`tokens` per sequence)."""
    head_dim = dim // heads

    def randn(gen: torch.Generator, *shape: int, std: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    def norm_inputs(gen: torch.Generator) -> Inputs:
        return {"x": randn(gen, batch, tokens, dim), "weight": 1.0 + randn(gen, dim, std=0.1)}

    def add_norm_inputs(gen: torch.Generator) -> Inputs:
        return {**norm_inputs(gen), "delta": randn(gen, batch, tokens, dim)}

    def rope_inputs(gen: torch.Generator) -> Inputs:
        cos, sin = rope_tables(tokens, head_dim)
        return {
            "q": randn(gen, batch, tokens, heads, head_dim),
            "k": randn(gen, batch, tokens, kv_heads, head_dim),
            "cos": cos,
            "sin": sin,
        }

    def swiglu_inputs(gen: torch.Generator) -> Inputs:
        return {"gate": randn(gen, batch, tokens, ffn_dim), "up": randn(gen, batch, tokens, ffn_dim)}

    def packed_inputs(gen: torch.Generator) -> Inputs:
        return {"gate_up": randn(gen, batch, tokens, 2 * ffn_dim)}

    def ce_inputs(gen: torch.Generator) -> Inputs:
        targets = torch.randint(0, vocab, (batch, tokens), generator=gen)
        targets[:, ::7] = -100  # some positions (padding, prompts) carry no loss
        return {
            "hidden": randn(gen, batch, tokens, dim),
            "weight": randn(gen, vocab, dim, std=dim**-0.5),
            "targets": targets,
        }

    return [
        Case("rms_norm", norm_inputs, lambda ops, a: ops.rms_norm(a["x"], a["weight"], 1e-5),
             ("x", "weight")),
        Case("add_rms_norm", add_norm_inputs,
             lambda ops, a: ops.add_rms_norm(a["x"], a["delta"], a["weight"], 1e-5),
             ("x", "delta", "weight")),
        Case("apply_rope", rope_inputs,
             lambda ops, a: ops.apply_rope(a["q"], a["k"], a["cos"], a["sin"]),
             ("q", "k"), keep_fp32=("cos", "sin")),
        Case("swiglu", swiglu_inputs, lambda ops, a: ops.swiglu(a["gate"], a["up"]),
             ("gate", "up")),
        Case("swiglu_packed", packed_inputs, lambda ops, a: ops.swiglu_packed(a["gate_up"]), ("gate_up",)),
        Case("linear_cross_entropy[mean]", ce_inputs,
             lambda ops, a: ops.linear_cross_entropy(a["hidden"], a["weight"], a["targets"]),
             ("hidden", "weight")),
        Case("linear_cross_entropy[none]", ce_inputs,
             lambda ops, a: ops.linear_cross_entropy(
                 a["hidden"], a["weight"], a["targets"], -100, "none"),
             ("hidden", "weight")),
    ]


def _as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, tuple | list) else (out,)


def _run(
    case: Case, ops: Ops, inputs: Inputs, upstream: Sequence[torch.Tensor]
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Outputs and the gradients of sum(out * upstream) w.r.t. the case's grad inputs."""
    leaves = {n: t.detach().requires_grad_(n in case.grads) for n, t in inputs.items()}
    outs = _as_tuple(case.call(ops, leaves))
    ups = [u.to(o.dtype) for u, o in zip(upstream, outs, strict=True)]
    grads = torch.autograd.grad(outs, [leaves[n] for n in case.grads], ups)
    return [o.detach() for o in outs], list(grads)


def _relative_error(x: torch.Tensor, truth: torch.Tensor) -> float:
    truth = truth.double()
    scale = truth.norm().item()
    diff = (x.double() - truth).norm().item()
    return diff / scale if scale else diff


def measure(
    case: Case,
    herd: Ops,
    dtype: torch.dtype,
    device: torch.device | str,
    seed: int = 0,
    noise_floor: float = 0.0,
) -> list[Measurement]:
    """herd's and torch's errors against fp64 for the case's outputs and gradients.

    `noise_floor` is an error always allowed: 0 for bf16 on a GPU; about one fp32 epsilon
    when fp32 is checked, where both errors are rounding noise and their ratio means little.
    """
    gen = torch.Generator().manual_seed(seed)
    raw = case.make(gen)

    def cast(to: torch.dtype) -> Inputs:
        out = {}
        for name, t in raw.items():
            if t.dtype.is_floating_point:
                t = t if name in case.keep_fp32 else t.to(dtype)  # round once, to `dtype`
                t = t.to(to) if to == torch.float64 else t
            out[name] = t.to(device)
        return out

    low, exact = cast(dtype), cast(torch.float64)
    with torch.no_grad():
        shapes = [o.shape for o in _as_tuple(case.call(reference, exact))]
    upstream = [
        (torch.randn(s, generator=gen) if len(s) else torch.ones(())).to(dtype).double().to(device)
        for s in shapes
    ]
    truth_out, truth_grads = _run(case, reference, exact, upstream)
    herd_out, herd_grads = _run(case, herd, low, upstream)
    torch_out, torch_grads = _run(case, reference, low, upstream)
    names = [f"out{i if len(truth_out) > 1 else ''}" for i in range(len(truth_out))]
    names += [f"d_{n}" for n in case.grads]
    return [
        Measurement(case.name, name, _relative_error(h, t), _relative_error(r, t), noise_floor)
        for name, h, r, t in zip(
            names, herd_out + herd_grads, torch_out + torch_grads, truth_out + truth_grads,
            strict=True,
        )
    ]
