"""Step timeouts are watched while a step awaits feedback; otherwise the node sleeps.

Watching them always woke an idle node's executor every TICK_PERIOD (20 times a second): a
few percent of a robot's core, for nothing. The PlanExecution, its timer and the executor
that spins it are the real ones, in this process. There is no worker, so a re-plan is
answered CANCELLED at once. A plan answered while the node deactivates is ended there, not
left executing with nothing to report on it.
"""

import threading
import uuid

from rclpy.qos import QoSProfile
from std_msgs.msg import Header, String
from vlm_ros.engine.plan_parser import PlanStep
from vlm_ros.node.plan_execution import PlanExecution
from vlm_ros.node.plan_runner import Feedback, State
from vlm_ros.node.settings import Settings
from waiting import wait_until

from vlm_ros_msgs.msg import Plan, PlanProgress

TIMEOUT = 20.0


def test_the_timer_runs_from_a_step_command_to_the_end_of_its_plan(test_node):
    node = test_node.node
    settings = [Settings.from_values({'step_timeout': 0.1, 'max_replans': 1})]
    vla = node.create_publisher(String, f'vla_{uuid.uuid4().hex[:8]}', 10)
    execution = PlanExecution(node, QoSProfile(depth=10), vla, lambda: settings[0],
                              lambda: None, lambda outcome: None)
    runner = execution.runner
    execution.activate(None)
    try:
        assert not execution.ticking(), 'an active node without a plan watches a timeout'
        silent = run_plan(execution, 'put the cup in the sink')
        assert silent.wait(TIMEOUT), 'no step timeout was seen: the timer did not run'
        with runner.lock:  # the tick that ended the plan has finished
            assert runner.finished[State.FAILED] == 1 and not execution.ticking()

        settings[0] = Settings.from_values({'step_timeout': 30.0})
        answered = run_plan(execution, 'wipe the table')
        assert execution.ticking(), 'a cancelled timer was not started again'
        runner.feedback(runner.current.plan_id, 0, 0, Feedback.SUCCEEDED, '')
        assert answered.wait(TIMEOUT) and runner.finished[State.DONE] == 1
        wait_until(lambda: not execution.ticking(), TIMEOUT, 'the next tick to stop the timer')
    finally:
        execution.deactivate('the test is over')


def run_plan(execution, instruction: str) -> threading.Event:
    """Start a one-step plan of instruction; return an Event set when its execution ends."""
    plan_id = f'plan-{uuid.uuid4().hex[:8]}'
    ended = threading.Event()
    execution.watch(plan_id, lambda progress: progress.state != 0 and ended.set())
    execution.runner.start(plan_id, instruction, Header(), [PlanStep(instruction, '', '')])
    return ended



def test_a_plan_answered_while_deactivating_ends_preempted_not_unwatched(test_node):
    """A worker's answer that races deactivate: its plan never runs with no feedback input.

    The answer's start is held where it begins the plan until deactivate, from another
    thread, has ended, or waits for the runner's lock, which the start holds: deactivate must
    wait for the start, then end the plan it began. Run unwatched, the plan's step would wait
    for ever.
    """
    node = test_node.node
    vla = node.create_publisher(String, f'vla_{uuid.uuid4().hex[:8]}', 10)
    execution = PlanExecution(node, QoSProfile(depth=10), vla,
                              lambda: Settings.from_values({'step_timeout': 30.0}),
                              lambda: None, lambda outcome: None)
    runner = execution.runner
    execution.activate(None)
    deactivated, settled = threading.Event(), threading.Event()

    def deactivate():
        execution.deactivate('the test deactivates')
        deactivated.set()
        settled.set()
    deactivating = threading.Thread(target=deactivate)
    runner.lock = _Observed(runner.lock, deactivating, settled)
    begin = runner.start

    def held_start(*args):
        deactivating.start()
        assert settled.wait(TIMEOUT), 'deactivate neither ended nor waited for the lock'
        begin(*args)
    runner.start = held_start
    plan = Plan(header=Header(frame_id='raced'), request_id=f'plan-{uuid.uuid4().hex[:8]}',
                instruction='stack the cups')
    states = []
    execution.watch(plan.request_id, lambda progress: states.append(progress.state))
    execution.start(plan, [PlanStep('stack the cups', '', '')])
    deactivating.join(TIMEOUT)
    assert deactivated.is_set() and runner.current is None, 'a plan executes, unwatched'
    assert states == [PlanProgress.STATE_EXECUTING, PlanProgress.STATE_PREEMPTED], states


class _Observed:
    """A runner's lock that sets found_taken when thread finds it held by another thread."""

    def __init__(self, lock, thread: threading.Thread, found_taken: threading.Event):
        self._lock, self._thread, self._found_taken = lock, thread, found_taken

    def __enter__(self):
        if threading.current_thread() is self._thread:
            if self._lock.acquire(blocking=False):
                return self
            self._found_taken.set()
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info):
        self._lock.release()
