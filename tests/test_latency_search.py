"""--target-latency's search over noisy timings (passes/latency_target.py)."""

import numpy as np
import pytest
from onnxprune.passes.latency_target import MAX_ROUNDS, LatencyBudget, timed_ratio


def _budget(target: float) -> LatencyBudget:
    return LatencyBudget(calibration=None, target=target, shapes={})


def test_next_target_fits_every_trial_from_the_third_on():
    budget = _budget(0.6)
    # Noise on the last point makes the secant through the last two slope downwards (a faster model for
    # a larger internal target); the least-squares line through all three still slopes upwards.
    trials = [{"internal_target": 0.6, "kept": 0.58}, {"internal_target": 0.64, "kept": 0.612},
              {"internal_target": 0.62, "kept": 0.65}]
    internal = np.array([t["internal_target"] for t in trials])
    slope, intercept = np.polyfit(internal, [t["kept"] for t in trials], 1)
    assert budget._next_target(trials) == pytest.approx((0.6 - intercept) / slope)
    # Two trials: the secant, as --target-flops does.
    assert budget._next_target(trials[:2]) == pytest.approx(0.6 + (0.6 - 0.58) / ((0.612 - 0.58) / 0.04))


def test_next_target_falls_back_when_the_fit_is_flat():
    budget = _budget(0.6)
    trials = [{"internal_target": 0.6, "kept": 0.7}, {"internal_target": 0.5, "kept": 0.7},
              {"internal_target": 0.4, "kept": 0.7}]
    assert 0.01 <= budget._next_target(trials) <= 0.999


class _Session:
    def __init__(self, seconds: float):
        self.seconds, self.calls = seconds, 0

    def run(self, outputs, feed):
        import time

        self.calls += 1
        time.sleep(self.seconds)


def test_timed_ratio_times_a_fast_model_for_more_rounds():
    original, candidate = _Session(0.002), _Session(0.001)
    ratio = timed_ratio(original, candidate, {}, runs=5)
    assert 0.3 < ratio < 0.8
    # 2 warm-ups, 1 probe, then rounds for about TRIAL_SECONDS of the original's time, far more than 5.
    assert 100 < original.calls - 3 <= MAX_ROUNDS


def test_choice_goes_by_the_fitted_line_not_a_lucky_timing():
    budget = _budget(0.6)
    # Truth: ratio = internal target. The plan at 0.66 was timed at 0.55 during a burst of other work;
    # by its own timing it would win (meets 0.6, keeps the most) and then run at ~0.66.
    trials = [{"internal_target": 0.6, "kept": 0.61}, {"internal_target": 0.66, "kept": 0.55},
              {"internal_target": 0.58, "kept": 0.585}, {"internal_target": 0.55, "kept": 0.56}]
    candidates = [(f"ratios{i}", f"plan{i}", t["kept"]) for i, t in enumerate(trials)]
    assert budget._choose(candidates[:2], trials[:2])[1] == "plan1"  # two trials: their own timings
    chosen = budget._choose(candidates, trials)
    assert chosen[1] != "plan1"
    assert chosen[2] == trials[int(chosen[1][-1])]["kept"]  # reported: what was measured


def test_sessions_timed_in_turn_do_not_spin():
    """Interleaved timing sessions keep their idle intra-op threads from spinning (runtime.session_options):
    spinning threads of the idle session took cores from the timed one and made ratios jump."""
    from onnxprune.check.runtime import session_options

    assert session_options(2, interleaved=True).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # ORT's default (spinning) when the entry is not set
        session_options(2).get_session_config_entry("session.intra_op.allow_spinning")
