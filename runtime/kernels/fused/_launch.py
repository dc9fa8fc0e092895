"""Launch settings shared by the Triton kernels: block sizes, warps, grid sizes, row views.

Kept apart from the kernels so that every kernel picks its tiles by the same rules.
"""

from __future__ import annotations

import functools

import torch
import triton

# One program holds a whole row in registers; past this many elements it would spill.
MAX_ROW_BLOCK = 65536


def row_block(n_cols: int) -> tuple[int, int]:
    """(BLOCK, num_warps) for a kernel that keeps one row of `n_cols` in one program."""
    block = triton.next_power_of_2(n_cols)
    if block > MAX_ROW_BLOCK:
        raise ValueError(f"rows of {n_cols} elements exceed the kernel limit of {MAX_ROW_BLOCK}")
    # At 16 warps a 16K-wide fp32 backward needs all 128 registers and spills (ptxas,
    # sm_90: `python -m runtime.kernels.compile_check`); 32 warps halve each thread's share.
    if block >= 16384:
        return block, 32
    if block >= 8192:
        return block, 16
    if block >= 2048:
        return block, 8
    return block, 4


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def persistent_programs(device: torch.device, n_rows: int, per_sm: int = 1) -> int:
    """Programs for a grid-stride loop over rows: `per_sm` per SM on a GPU (more than one
    keeps loads in flight while a program waits on its row reductions), few when
    interpreted."""
    if device.type == "cuda":
        return max(1, min(n_rows, per_sm * _sm_count(device.index or 0)))
    return max(1, min(n_rows, 4))


def as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """A (rows, n_cols) view with unit stride along the row, copying only when needed."""
    rows = t.reshape(-1, n_cols)
    return rows if rows.stride(-1) == 1 else rows.contiguous()
