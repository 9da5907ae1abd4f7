"""The benchmark timer calls a step as often as its settings say (a minute-long baseline must not run thrice)."""

from __future__ import annotations

from neurobundles.tools.timing import median_seconds


def _counting_step(calls: list[int]):
    def step() -> int:
        calls.append(1)
        return len(calls)

    return step


def test_one_repeat_times_one_call_after_the_warm_up():
    calls: list[int] = []
    seconds, result = median_seconds(_counting_step(calls), repeats=1)
    assert len(calls) == 2 and result == 1 and seconds >= 0  # the warm-up's result is returned


def test_one_repeat_without_warm_up_is_a_single_call():
    calls: list[int] = []
    seconds, result = median_seconds(_counting_step(calls), repeats=1, warmup=False)
    assert len(calls) == 1 and result == 1 and seconds >= 0


def test_several_repeats_take_the_median_of_an_autorange():
    calls: list[int] = []
    median_seconds(_counting_step(calls), repeats=3)
    assert len(calls) >= 3
