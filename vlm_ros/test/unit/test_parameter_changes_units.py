"""A parameter change at run time (parameter_changes.accept): what it says as it is made.

Configure names the launch values that change nothing; a `ros2 param set` that leaves a value
without effect must be said when it is made, not at the next configure, and only what it
changed: a value already said is not said again at every change.
"""

from rclpy.parameter import Parameter
from vlm_ros.node import parameter_changes
from vlm_ros.node.settings import Settings


class Said:
    """The log a change writes to: its warnings and errors, in order."""

    def __init__(self):
        self.warnings, self.errors = [], []

    def warning(self, text: str) -> None:
        self.warnings.append(text)

    def error(self, text: str) -> None:
        self.errors.append(text)


def change(settings: Settings, model_loaded: bool = False, **values) -> tuple:
    """Return (result, kept settings, log) of setting values at run time."""
    log = Said()
    result, kept = parameter_changes.accept(
        settings, [Parameter(name, value=value) for name, value in values.items()], {},
        model_loaded, lambda changed, applied: None, log)
    return result, kept, log


def test_a_change_switched_off_by_another_setting_is_said_as_it_is_made():
    result, kept, log = change(Settings.from_values(), verify_by='likelihood')
    assert result.successful and kept.verify_by == 'likelihood'
    assert log.warnings == ['no effect: verify_by:=likelihood while verify_steps:=false (only '
                            'step checks read it)']


def test_a_change_that_switches_another_setting_off_says_that_one():
    settings = Settings.from_values({'batch_wait': 0.05, 'max_batch_size': 4})
    result, kept, log = change(settings, max_batch_size=1)
    assert result.successful and log.warnings == [
        'no effect: batch_wait:=0.05 while max_batch_size:=1 (no batch waits for company)']
    _, _, back = change(kept, max_batch_size=2)  # the switch is off again: the value acts
    assert back.warnings == []


def test_a_value_already_without_effect_is_not_said_again_at_each_change():
    settings = Settings.from_values({'batch_wait': 0.05, 'verify_by': 'likelihood'})
    result, _, log = change(settings, caption_rate=2.0)
    assert result.successful and log.warnings == []
    _, _, other = change(settings, batch_wait=0.1)  # a new value, still without effect
    assert other.warnings == ['no effect: batch_wait:=0.1 while max_batch_size:=1 (no batch '
                              'waits for company)']


def test_a_change_the_backend_does_not_use_is_said_with_the_backend():
    remote = Settings.from_values({'backend': 'openai'})
    result, _, log = change(remote, dtype='float16')
    assert result.successful
    assert log.warnings == ['no effect: dtype:=float16 (the openai backend does not use it)']


def test_a_refused_change_says_nothing_of_effects():
    result, kept, log = change(Settings.from_values(), model_loaded=True, device='cuda',
                               verify_by='likelihood')
    assert not result.successful and 'device' in result.reason
    assert kept.verify_by == 'answer' and log.warnings == [] and log.errors == []


def test_a_change_that_unsets_a_parameter_is_refused():
    """Else rclpy would undeclare it: every later get or set failed until the node restarted."""
    before = Settings.from_values({'skills': ('pick', 'place')})
    result, kept, log = change(before, skills=None, max_new_tokens=50)
    assert not result.successful and result.reason.startswith('skills: no value given'), result
    assert kept is before and log.warnings == [] and log.errors == []
