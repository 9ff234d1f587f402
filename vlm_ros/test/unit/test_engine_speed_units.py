"""vlm_benchmark's plan grammar cost is taken pair by pair, so a drifting machine cancels out."""

import pytest
from vlm_ros.benchmarks.engine_speed import paired_cost_pct


def test_the_cost_is_the_median_of_the_pairs_not_the_ratio_of_the_medians():
    # The machine slows down to half speed between the two runs of the third pair, and stays
    # slow: every constrained run costs 5 % over the free run beside it, yet the medians taken
    # side by side (1.0 and 2.1 ms) would say +110 %.
    free = [1.0, 1.0, 1.0, 2.0, 2.0]
    bound = [1.05, 1.05, 2.1, 2.1, 2.1]
    assert paired_cost_pct(free, bound) == pytest.approx(5.0)


def test_runs_must_come_in_pairs():
    with pytest.raises(ValueError):
        paired_cost_pct([1.0, 1.0], [1.1])
