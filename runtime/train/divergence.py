"""Stop a training job at the first step whose loss or gradient is not finite.

One NaN step turns every weight into NaN through the optimizer, and training then goes on
"successfully" to the end: every later loss is NaN, the checkpoint is useless and the jobs
downstream (evals, generation) fail far from the cause. Checking the step's loss (and the
gradient norm where it is computed anyway, for clipping) before the optimizer applies it
keeps the weights and the last saved state as they were, and names the step.
"""

from __future__ import annotations

import math
from typing import Any

from runtime.jobs.context import JobContext, JobFailed


def norm_value(norm: Any) -> float:
    """`clip_grad_norm_`'s result as a float; under FSDP2 it is a DTensor (the full norm,
    replicated) that converts through its local value."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


def check_finite(ctx: JobContext, step: int, loss: float, grad_norm: float | None = None) -> None:
    """Raise JobFailed when this step's loss or gradient norm is NaN or infinite."""
    if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
        return
    what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
    raise JobFailed(f"{ctx.job_id}: {what} at step {step}: training diverged; the step was not "
                    "applied and the weights saved so far are kept\n"
                    "hint: lower the learning rate, lengthen the warmup or clip gradients "
                    "(clip = 1.0); in bf16, precision = fp32 tells a numerical problem from a bad rate")
