"""Timing for the tools: PyTorch's benchmark ``Timer`` (CUDA synchronised, thread count kept) after a warm-up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.benchmark import Timer

__all__ = ["median_seconds"]


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_seconds(step: Callable[[], Any], repeats: int = 3, warmup: bool = True) -> tuple[float, Any]:
    """Median seconds per call of ``step`` over about ``repeats`` timed calls, and the warm-up call's result.

    The warm-up absorbs allocations and oneDNN/cuDNN kernel selection; ``Timer.blocked_autorange`` then runs
    until ``repeats`` times the warm-up's duration has passed (its block-size estimate is one more call);
    ``repeats=1`` times exactly one call after the warm-up; with ``warmup=False`` as well, that one call is
    the result (for a minute-long baseline with nothing to compile or select).
    """
    if repeats <= 1 and not warmup:
        _synchronize()
        start = time.perf_counter()
        result = step()
        _synchronize()
        return time.perf_counter() - start, result
    start = time.perf_counter()
    result = step()
    rough = time.perf_counter() - start
    if repeats <= 1:  # one timed call: the autorange's extra estimate call would double a minute-long step
        _synchronize()
        start = time.perf_counter()
        step()
        _synchronize()
        return time.perf_counter() - start, result
    timer = Timer(stmt="step()", globals={"step": step}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=rough * max(repeats, 1) * 0.95)
    return measurement.median, result
