"""Learning-rate schedules: linear warmup, then cosine / linear / constant / WSD to min_lr."""

from __future__ import annotations

import math
from typing import Any

KINDS = ("cosine", "linear", "constant", "wsd")


def lr_at(step: int, schedule: dict[str, Any]) -> float:
    """LR for optimizer step `step` (0-based). Past total_steps the schedule stays at its end
    value, so extra training (a failed gate's chunks) continues at min_lr."""
    kind = schedule.get("kind", "cosine")
    if kind not in KINDS:
        raise ValueError(f"unknown schedule kind {kind!r} (known: {', '.join(KINDS)})")
    peak = float(schedule["peak_lr"])
    low = float(schedule.get("min_lr", 0.0))
    warmup = int(schedule.get("warmup_steps", 0))
    total = max(1, int(schedule["total_steps"]))
    if kind == "constant":
        return peak * min(1.0, (step + 1) / warmup) if warmup else peak
    if warmup and step < warmup:
        return peak * (step + 1) / warmup
    if kind == "wsd":
        decay = max(1, round(float(schedule.get("decay_fraction", 0.2)) * total))
        start = total - decay
        if step < start:
            return peak
        frac = min(1.0, (step - start + 1) / decay)
        return peak + (low - peak) * frac
    span = max(1, total - warmup)
    # linear to 0 at the last step: annealing's final step uses min_lr exactly
    frac = min(1.0, (step - warmup + 1) / span)
    if kind == "linear":
        return peak + (low - peak) * frac
    return low + 0.5 * (peak - low) * (1.0 + math.cos(math.pi * frac))
