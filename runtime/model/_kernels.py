"""The kernel entry points the model calls, resolved in one place.

`runtime.kernels` dispatches per call: Triton on CUDA, the torch references elsewhere,
`HERD_KERNELS=reference|triton` to force either. Keeping the model's imports here means
swapping an implementation (or stubbing one in a test) is a one-line change.
"""

from __future__ import annotations

from runtime.kernels import (
    add_rms_norm,
    apply_rope,
    linear_cross_entropy,
    rms_norm,
    swiglu,
    swiglu_packed,
)

__all__ = ["add_rms_norm", "apply_rope", "linear_cross_entropy", "rms_norm", "swiglu", "swiglu_packed"]
