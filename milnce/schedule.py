"""Learning-rate schedules, stepped every iteration as the MIL-NCE code does."""
from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """MIL-NCE's LambdaLR factor: linear warm-up to 1, then 0.5·(1+cos(π·progress)) down to 0 at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, total_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def warmup_constant(step: int, warmup_steps: int, total_steps: int) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    return 1.0


SCHEDULES = {"cosine": warmup_cosine, "constant": warmup_constant}
