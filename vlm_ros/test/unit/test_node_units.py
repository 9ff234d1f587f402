"""The node's ROS-free parts alone: latency percentiles, parameter validation."""

import random

import pytest
from vlm_ros.node.frames import StampGaps
from vlm_ros.node.params import validate
from vlm_ros.node.stats import Stats


@pytest.mark.parametrize(('q', 'expected'), [(50, 3.0), (95, 6.0), (100, 6.0), (0, 1.0),
                                             (34, 3.0), (33, 2.0)])
def test_percentile_is_the_nearest_rank(q, expected):
    stats = Stats()
    for value in (4.0, 1.0, 6.0, 2.0, 5.0, 3.0):
        stats.record('OK', value)
    assert stats.percentile(q) == expected


def test_percentile_of_nothing_is_zero():
    assert Stats().percentile(50) == 0.0


@pytest.mark.parametrize('template', [
    '{instruction.foo}', '{instruction:>1000000000000}', '{instruction!r}', '{instruction[0]}',
    '{0}', '{', 'no placeholder', 'x' * 9000])
def test_hostile_plan_templates_are_refused_with_a_reason(template):
    reason = validate('prompt_plan', template)
    assert reason and 'prompt template' in reason


def test_safe_templates_pass():
    assert validate('prompt_plan', 'Plan {{"steps": []}} for: {instruction}') is None


@pytest.mark.parametrize('text', ['[' * 100_000, '{"a": ' * 1000 + '1' + '}' * 1000,
                                  '{"a": [[[[[[[[[1]]]]]]]]]}', '{"a": "' + 'x' * 5000 + '"}'])
def test_hostile_processor_kwargs_are_refused(text):
    reason = validate('processor_kwargs', text)
    assert reason and 'processor_kwargs' in reason


def test_a_validator_that_raises_anything_refuses_instead(monkeypatch):
    import vlm_ros.node.params as params

    def explode(name, value):
        raise MemoryError('no room')
    monkeypatch.setattr(params, '_check_value', explode)
    assert 'MemoryError' in params.validate('prompt_plan', 'x {instruction}')


def _gaps(stamps) -> StampGaps:
    gaps = StampGaps()
    for stamp in stamps:
        gaps.add(stamp)
    return gaps


def test_stamp_gaps_count_the_frames_missing_from_a_steady_camera():
    arrived = [i / 30 for i in range(300) if i < 10 or i % 7]  # every 7th lost
    assert _gaps(arrived).lost == len([i for i in range(10, 300) if i % 7 == 0])


def test_stamp_gaps_count_a_burst_of_lost_frames():
    assert _gaps([i / 10 for i in [*range(20), *range(25, 40)]]).lost == 5


@pytest.mark.parametrize(('why', 'stamps'), [
    ('a camera that paused for 5 s', [*(i / 30 for i in range(30)),
                                       *(5 + i / 30 for i in range(30))]),
    ('an unstamped camera', [0.0] * 50),
    ('a bag played twice', [*(i / 30 for i in range(30)), *(i / 30 for i in range(30))]),
    ('stamping jitter of up to 20 %', [i / 30 + random.Random(i).uniform(-0.2, 0.2) / 30
                                       for i in range(300)]),
])
def test_stamp_gaps_do_not_count(why, stamps):
    assert _gaps(stamps).lost == 0, why
