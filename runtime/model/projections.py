"""Linear projections of one input, run as one matmul over their stacked weights.

q, k and v all project the attention norm's output, w1 and w3 the FFN norm's. Separate,
each GEMM reads that input again, and in the backward each writes its own gradient of it,
which autograd then adds up (at the 1B training step's 32K tokens, every such read, write
or add moves 134 MB). One GEMM over the stacked weights reads the input once, writes one
gradient, and is wider (k and v alone are 512 wide at 1B). The weights stay separate
parameters, so checkpoints, LoRA and tensor parallelism see the usual modules; they are
stacked on every forward, a copy of the weights (~80 MB a layer at 1B, in bf16).

`HERD_FUSE_PROJECTIONS=auto|on|off`. auto stacks on CUDA while autograd records (training
and its recomputation), where the saved input reads and gradient adds dwarf the copy; not
without gradients (evaluation, sampling), where the backward's savings do not exist and a
decoding step, which reads every weight once anyway, would read and write the stacked ones
again (about twice the traffic of those weights per generated token). Modules that are
not plain bias-free `nn.Linear`s, carry hooks (tensor parallelism's) or hold sharded
weights run one by one as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels import autocast_dtype
from runtime.switches import PROJECTIONS

ENV_VAR = PROJECTIONS.name


def _stackable(linears: tuple[nn.Module, ...]) -> bool:
    for m in linears:
        if type(m) is not nn.Linear or m.bias is not None:
            return False
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return False  # what the module's own call would run
        if type(m.weight) not in (nn.Parameter, torch.Tensor):  # a DTensor shard, a quantized weight
            return False
    return True


def auto_stacks(on_cuda: bool) -> bool:
    """Whether HERD_FUSE_PROJECTIONS=auto stacks: CUDA inputs whose forward autograd records."""
    return on_cuda and torch.is_grad_enabled()


def fused(x: torch.Tensor, linears: tuple[nn.Module, ...]) -> torch.Tensor | None:
    """The projections of x concatenated along the last dimension, from one matmul, or
    None where they must run one by one (see the module docstring)."""
    choice = PROJECTIONS.read()
    if choice == "off" or (choice == "auto" and not auto_stacks(x.is_cuda)) or not _stackable(linears):
        return None
    dtype = autocast_dtype(x)
    weights = [m.weight if dtype is None else m.weight.to(dtype) for m in linears]
    return F.linear(x, torch.cat(weights))
