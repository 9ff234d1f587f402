"""scripted_vla_head: a stand-in VLA action head that executes plan steps per a script.

It stands where OpenVLA, Octo or pi0 would, and implements the contract a real head follows:
take each StepCommand on `step`, report RUNNING on `step_feedback` at once, then SUCCEEDED or
FAILED with the same plan_id and index; a newer StepCommand replaces the one being executed.

Parameters: `step_time` (s each step "takes", a double from 0 to 3600), `script`
(comma-separated outcomes for the successive commands: succeed, fail or silent; after the list,
every step succeeds; e.g. 'succeed,fail' fails the second command once). The tests and the
demo use it to drive vlm_node's closed loop without a robot.
"""

import sys
import threading

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vlm_ros_msgs.msg import StepCommand, StepFeedback

from ..compat import ForgetsDestroyed
from ..spin import ros_arguments_only, spin_main

OUTCOMES = ('succeed', 'fail', 'silent')
MAX_STEP_TIME = 3600.0  # s: a timer's period; rclpy refuses a NaN or negative one at the step
LOG_THROTTLE = 0.05  # s between two step lines: a plan's steps are seconds apart, a flood not
RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)


def parse_script(text: str) -> list:
    """Return the outcomes of a script, or raise ValueError naming the bad entry."""
    outcomes = [part.strip() for part in text.split(',') if part.strip()]
    for outcome in outcomes:
        if outcome not in OUTCOMES:
            raise ValueError(f'script entry {outcome!r} is not one of {", ".join(OUTCOMES)}')
    return outcomes


class ScriptedHead(ForgetsDestroyed, Node):
    """Answers each StepCommand after step_time with the script's next outcome."""

    def __init__(self):
        super().__init__('scripted_vla_head')
        self.declare_parameter('step_time', 0.2, ParameterDescriptor(
            description='s each step takes before its outcome is reported', read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=MAX_STEP_TIME)]))
        self.declare_parameter('script', '', ParameterDescriptor(
            description='comma-separated outcomes of the successive steps: succeed, fail or '
            'silent; then every step succeeds', read_only=True))
        script = self.get_parameter('script').value
        try:
            self._script = parse_script(script)
        except ValueError as exc:  # refused as rclpy refuses a value: spin_main says why
            raise InvalidParameterValueException('script', script, str(exc)) from exc
        self._step_time = float(self.get_parameter('step_time').value)
        self._feedback = self.create_publisher(StepFeedback, 'step_feedback', RELIABLE)
        self.create_subscription(StepCommand, 'step', self._on_step, RELIABLE)
        self._lock = threading.Lock()
        self._timer = None
        self._current = None  # the StepCommand being executed
        self.commands = 0

    def _on_step(self, step: StepCommand) -> None:
        with self._lock:
            outcome = self._script[self.commands] if self.commands < len(self._script) \
                else 'succeed'
            self.commands += 1
            if self._timer is not None:  # a newer command replaces the one being executed
                self.destroy_timer(self._timer)
                self._timer = None
            self._current = step
            # Anything on the DDS domain can publish on step: a line each, cut short.
            self.get_logger().info(f'step {step.index + 1}/{step.count} of {step.plan_id[:200]} '
                                   f'(attempt {step.attempt}): {step.instruction[:200]} -> '
                                   f'{outcome}', throttle_duration_sec=LOG_THROTTLE)
            if outcome == 'silent':
                return
            self._report(step, StepFeedback.STATUS_RUNNING, 'executing')
            self._timer = self.create_timer(self._step_time,
                                            lambda: self._finish(step, outcome))

    def _finish(self, step: StepCommand, outcome: str) -> None:
        with self._lock:
            if self._current is not step:  # replaced meanwhile: its outcome is nobody's
                return
            self._current = None
            if self._timer is not None:
                self.destroy_timer(self._timer)
                self._timer = None
        if outcome == 'succeed':
            self._report(step, StepFeedback.STATUS_SUCCEEDED, 'done')
        else:
            self._report(step, StepFeedback.STATUS_FAILED, 'the script says this step fails')

    def _report(self, step: StepCommand, status: int, message: str) -> None:
        self._feedback.publish(StepFeedback(plan_id=step.plan_id, index=step.index,
                                            attempt=step.attempt, status=status,
                                            message=message))


def main(args=None) -> None:
    """Console script scripted_vla_head (exit 0 on SIGINT/SIGTERM)."""
    refused = ros_arguments_only(__doc__, ('step_time', 'script'), args)
    sys.exit(refused if refused is not None else spin_main(ScriptedHead, args))


if __name__ == '__main__':
    main()
