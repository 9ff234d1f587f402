"""Shutdown contract: signals, shutdown and deactivate answer everything pending, then stop.

Signals come from this (another) process while a generation runs and requests wait; every
process must exit 0 without rclpy's abort ("terminate called ..."), and fast.
"""

import os
import pathlib
import signal
import subprocess
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from action_msgs.msg import GoalStatus
from node_harness import (
    TIMEOUT,
    camera,
    node_executable,
    send_goal,
    set_ok,
    shared_memory_of,
    transition,
)
from rclpy.action import ActionServer
from rclpy.node import Node
from ros_harness import start_process, stop_process, wait_future
from vlm_ros.compat import ActionClient
from vlm_ros.node import shutdown
from vlm_ros.spin import SpinThread, TrackingExecutor
from waiting import wait_exit, wait_until

from vlm_ros import spin
from vlm_ros_msgs.action import ExecutePlan, GeneratePlan
from vlm_ros_msgs.msg import Plan, PlanProgress
from vlm_ros_msgs.srv import Query


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_exits_cleanly(test_node, sig):
    payload = uuid.uuid4().hex
    peer = start_process(['interface_peer.py', payload])
    plans = test_node.collect(Plan, 'plan')
    try:
        # Spinning for sure: its timer callback has published to us.
        plans.wait_for(lambda m: m.request_id == payload, 30.0, 'the peer to spin')
    finally:
        code, _, err = stop_process(peer, sig)
    assert 'terminate called' not in err
    assert code == 0, err


# Each answer: seconds of generation. Free text: a plan under the schema's grammar would end
# after its last step.
LONG = {'max_new_tokens': 4096, 'wait_for_image': 30.0, 'constrain_plans': 'off'}


def _busy_node(start_vlm_node, untrained_llava, waiting: int):
    """Start a node generating one answer with `waiting` instructions queued behind it."""
    node = start_vlm_node(model=str(untrained_llava), queue_size=waiting + 2, **LONG)
    node.wait_state('active')
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a frame')
    texts = [f'instruction {i} {uuid.uuid4().hex}' for i in range(waiting + 1)]
    for text in texts:
        node.instruct(text)
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1' and
                   v.get('queue_length') == str(waiting), TIMEOUT,
                   f'one generation running and {waiting} waiting')
    return node, texts


def _interrupted(plan: Plan) -> bool:
    """Tell whether plan's generation was stopped before its LONG budget: not waited for."""
    return plan.status == Plan.STATUS_CANCELLED and plan.output_tokens < LONG['max_new_tokens']


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_signal_while_generating_answers_every_instruction(start_vlm_node, untrained_llava,
                                                           sig):
    node, texts = _busy_node(start_vlm_node, untrained_llava, waiting=6)
    code, err = node.stop(sig)
    assert 'terminate called' not in err
    assert code == 0, err[-3000:]
    answered = node.answers(texts)  # acknowledged before the exit, maybe not yet collected
    assert len([p for p in node.plans.items() if p.instruction in texts]) == len(texts)
    cancelled = [p for p in answered if p.status == Plan.STATUS_CANCELLED]
    assert len(cancelled) >= 6 and all('shutting down' in p.message for p in cancelled)
    running = [p for p in cancelled if 'during generation' in p.message]
    assert running and all(map(_interrupted, running)), [p.message for p in cancelled]


def test_the_shutdown_transition_while_generating_answers_every_instruction_and_exits_0(
        start_vlm_node, untrained_llava):
    """`vlm_client shutdown` from active, as a mission executive ends a node: a signal's path."""
    node, texts = _busy_node(start_vlm_node, untrained_llava, waiting=6)
    done = subprocess.run([node_executable('vlm_client'), 'shutdown'], capture_output=True,
                          text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout) == (0, 'finalized\n'), done.stderr
    code, _, _ = wait_exit(node.proc, TIMEOUT, 'the end after the shutdown transition')
    assert code == 0, node.log_text()[-3000:]
    answered = node.answers(texts)  # acknowledged before the exit, maybe not yet collected
    cancelled = [p for p in answered if p.status == Plan.STATUS_CANCELLED]
    assert len(cancelled) >= 6 and all('shutting down' in p.message for p in cancelled), \
        [p.message for p in answered]
    running = [p for p in cancelled if 'during generation' in p.message]
    assert running and all(map(_interrupted, running)), [p.message for p in cancelled]


def test_signal_answers_a_running_goal_and_a_waiting_query(start_vlm_node, untrained_llava,
                                                           test_node):
    node = start_vlm_node(model=str(untrained_llava), **LONG)
    node.wait_state('active')
    streaming = threading.Event()
    client, _, handle = send_goal(test_node, 'keep going', lambda _: streaming.set())
    result = handle.get_result_async()  # as clients do: asked for at once, answered at the end
    assert streaming.wait(TIMEOUT), 'no feedback: not generating'
    query = test_node.node.create_client(Query, '/vlm_node/query')
    assert query.wait_for_service(timeout_sec=TIMEOUT)
    response = query.call_async(Query.Request(question='what is there?'))
    # Not the goal's moment in the queue before a thread took it: the query behind it.
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1' and
                   v.get('queue_length') == '1', TIMEOUT, 'the query queued')
    code, err = node.stop(signal.SIGTERM)
    assert code == 0 and 'terminate called' not in err, err[-3000:]
    result = wait_future(result, TIMEOUT, 'the goal result')
    assert _interrupted(result.result.plan), result.result.plan
    answer = wait_future(response, TIMEOUT, 'the query response')
    assert not answer.success and 'shutting down' in answer.message
    client.destroy()



def test_signal_answers_an_execute_plan_goal_whose_plan_is_being_made(start_vlm_node,
                                                                     untrained_llava, test_node):
    node = start_vlm_node(model=str(untrained_llava), **LONG)
    node.wait_state('active')
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a frame')
    client = ActionClient(test_node.node, ExecutePlan, '/vlm_node/execute_plan')
    assert client.wait_for_server(timeout_sec=TIMEOUT), 'execute_plan never appeared'
    handle = wait_future(client.send_goal_async(ExecutePlan.Goal(
        instruction=f'tidy up {uuid.uuid4().hex}')), TIMEOUT, 'goal acceptance')
    result = handle.get_result_async()
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1', TIMEOUT, 'its plan made')
    code, err = node.stop(signal.SIGTERM)
    assert code == 0 and 'terminate called' not in err, err[-3000:]
    done = wait_future(result, TIMEOUT, 'the goal result')
    progress = done.result.progress
    assert done.status == GoalStatus.STATUS_ABORTED, progress
    assert progress.state == PlanProgress.STATE_PREEMPTED, progress
    assert progress.message.startswith('no plan to execute: CANCELLED: ') and \
        'shutting down' in progress.message, progress.message
    client.destroy()

def test_sigterm_while_a_replan_generates_publishes_it_cancelled_and_exits_0(
        start_vlm_node, untrained_llava, test_node):
    """A re-plan (replan_period) has no client to answer: the robot learns its end on plan."""
    node = start_vlm_node(model=str(untrained_llava), **{**LONG, 'max_new_tokens': 4})
    node.wait_state('active')
    node.stream(camera(uuid.uuid4().hex)).wait_for(lambda m: True, TIMEOUT, 'a frame')
    text = f'instruction {uuid.uuid4().hex}'
    node.instruct(text)
    node.plans.wait_for(lambda p: p.instruction == text, TIMEOUT, 'its plan')
    set_ok(test_node, max_new_tokens=LONG['max_new_tokens'], replan_period=0.05)
    # One request in progress in two diagnostics in a row, and none answered between them:
    # a re-plan of LONG's budget (the instruction's own plan has ended).
    previous = {}
    for _ in range(int(TIMEOUT)):
        values = node.diag_from_now()(lambda v: True, TIMEOUT, 'the next diagnostics')
        if values.get('requests_in_progress') == '1' and \
                values.get('engine_requests') == previous.get('engine_requests'):
            break
        previous = values if values.get('requests_in_progress') == '1' else {}
    else:
        raise AssertionError('no re-plan ran from one diagnostics message to the next')
    code, err = node.stop(signal.SIGTERM)
    assert code == 0 and 'terminate called' not in err, err[-3000:]
    cancelled = node.plans.wait_for(
        lambda p: p.instruction == text and p.status == Plan.STATUS_CANCELLED, TIMEOUT,
        'the re-plan cancelled')  # said before the exit, maybe not yet collected
    assert 'shutting down' in cancelled.message and _interrupted(cancelled), cancelled.message


def _goal_to_drain(test_node, execute, payload: str) -> tuple:
    """Serve GeneratePlan with execute on a TrackingExecutor and send it a goal of payload.

    Return the client's goal handle and the server's (accepted, to be executed by the drain
    as a shutdown would), the executor, its SpinThread and the client.
    """
    server_node = Node(f'drain_{uuid.uuid4().hex[:8]}')
    executor = TrackingExecutor(2)
    accepted = []
    ActionServer(server_node, GeneratePlan, '~/drained', execute_callback=execute,
                 handle_accepted_callback=accepted.append)
    spinner = SpinThread([server_node], executor)
    client = ActionClient(test_node.node, GeneratePlan, f'/{server_node.get_name()}/drained')
    assert client.wait_for_server(timeout_sec=TIMEOUT)
    handle = wait_future(client.send_goal_async(GeneratePlan.Goal(instruction=payload)),
                         TIMEOUT, 'goal acceptance')
    wait_until(lambda: bool(accepted), TIMEOUT, 'the goal accepted')
    return handle, accepted[0], executor, spinner, client


def test_a_goal_result_still_being_made_on_the_way_out_is_sent(test_node):
    """The drain waits for the tasks that send a result, however late they are created.

    A goal stops being busy when its execute callback takes its outcome; rclpy sends the
    result from tasks created after the callback returns. Here the callback returns only once
    the drain has seen the goal not busy: the result must reach the client all the same.
    """
    drained = threading.Event()
    answering = threading.Event()  # the execute callback has taken the goal's outcome

    def execute(goal_handle):
        answering.set()
        drained.wait(TIMEOUT)
        goal_handle.abort()
        return GeneratePlan.Result(plan=Plan(status=Plan.STATUS_CANCELLED, message=payload))

    def tasks_done():
        drained.set()  # asked only once nothing is busy: let the callback end now
        return executor.tasks_done()

    payload = uuid.uuid4().hex
    handle, accepted, executor, spinner, client = _goal_to_drain(test_node, execute, payload)
    result = handle.get_result_async()
    shutdown.shutdown_gracefully('active', accepted.execute,
                                 lambda: not answering.is_set(), tasks_done)
    spinner.stop()
    assert wait_future(result, TIMEOUT, 'the goal result').result.plan.message == payload
    client.destroy()


def test_stop_wakes_the_spinning_thread_instead_of_waiting_out_its_check(rclpy_context,
                                                                           monkeypatch):
    """Every vlm_ros process stops its executor on the way out: at once, not after SPIN_CHECK.

    With an hour between checks, only stop()'s own wake-up can end the spinning in time.
    """
    monkeypatch.setattr(spin, 'SPIN_CHECK', 3600.0)
    node = Node(f'spin_stop_{uuid.uuid4().hex[:8]}')
    ticked = threading.Event()

    def tick():  # once: a timer that goes on firing would wake the executor by itself
        timer.cancel()
        ticked.set()
    timer = node.create_timer(0.01, tick)
    spinner = SpinThread([node], TrackingExecutor(2))
    assert ticked.wait(TIMEOUT), 'the executor never spun'
    stopping = threading.Thread(target=spinner.stop, daemon=True)
    stopping.start()
    stopping.join(TIMEOUT)
    assert not stopping.is_alive(), "stop() waited for the spin thread's next check"
    spinner.stop()  # a second stop changes nothing


class _HeldClock:
    """The drain's clock, held still until the test lets it run past every bound at once.

    So the drain ends only when the test says: whether it was still serving when a result
    arrived depends on what it decided, not on how fast a loaded machine sent the result.
    """

    def __init__(self):
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def release(self) -> None:
        self.now += shutdown.DRAIN_TIMEOUT + shutdown.GRACE + 1.0


def test_a_result_asked_for_after_its_goal_ended_on_the_way_out_is_still_sent(test_node,
                                                                             monkeypatch):
    """A result is sent when its client asks: a request still in flight is served too.

    The client asks for the result only once the goal has ended in the drain (as a request
    sent just before the signal but taken late would): the drain must still be serving when
    the result arrives (for shutdown.GRACE, held here), not have let the node go.
    """
    clock = _HeldClock()
    monkeypatch.setattr(shutdown, 'time', SimpleNamespace(monotonic=clock.monotonic,
                                                          sleep=time.sleep))
    ended = threading.Event()
    payload = uuid.uuid4().hex

    def execute(goal_handle):
        goal_handle.abort()
        ended.set()
        return GeneratePlan.Result(plan=Plan(status=Plan.STATUS_CANCELLED, message=payload))

    handle, accepted, executor, spinner, client = _goal_to_drain(test_node, execute, payload)
    quiet = threading.Event()  # the drain saw the goal ended and its tasks run

    def tasks_done():
        done = executor.tasks_done()
        if done and ended.is_set():
            quiet.set()
        return done
    drain = threading.Thread(target=shutdown.shutdown_gracefully, args=(
        'active', accepted.execute, lambda: not ended.is_set(), tasks_done))
    drain.start()
    try:
        assert quiet.wait(TIMEOUT)
        result = wait_future(handle.get_result_async(), TIMEOUT, 'the goal result')
        serving = drain.is_alive()
    finally:
        clock.release()
        drain.join()
        spinner.stop()
    assert result.result.plan.message == payload
    assert serving, 'the drain ended before the result asked for after the goal ended was sent'
    client.destroy()


def test_idle_node_exits_0_on_sigint(start_vlm_node):
    node = start_vlm_node()
    node.wait_state('active')
    code, err = node.stop(signal.SIGINT)
    assert code == 0, err[-3000:]


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM], ids=['SIGINT', 'SIGTERM'])
def test_a_stopped_node_leaves_no_shared_memory_behind(start_vlm_node, sig):
    # Each run maps a 16.5 MB segment (the large-frames profile) in /dev/shm, which is RAM: a
    # node restarted by its launch file must not fill it run after run.
    node = start_vlm_node()
    node.wait_state('active')
    # A participant maps its peers' segments too: this process's are not the node's to free.
    segments = shared_memory_of(node.proc.pid) - shared_memory_of(os.getpid())
    assert segments, 'the node maps no Fast DDS segment: nothing to check'
    code, err = node.stop(sig)
    assert code == 0, err[-3000:]
    assert [path for path in segments if pathlib.Path(path).exists()] == []


def test_deactivate_wakes_a_query_waiting_for_an_image(start_vlm_node, test_node):
    node = start_vlm_node(wait_for_image=60.0)  # no camera: the query waits for a frame
    node.wait_state('active')
    query = test_node.node.create_client(Query, '/vlm_node/query')
    assert query.wait_for_service(timeout_sec=TIMEOUT)
    response = query.call_async(Query.Request(question='anything?'))
    node.wait_diag(lambda v: v.get('requests_in_progress') == '1', TIMEOUT, 'the query waiting')
    assert transition(test_node, 'deactivate')  # else the query waits its 60 s, past TIMEOUT
    answer = wait_future(response, TIMEOUT, 'the query response')
    assert not answer.success and 'deactivated' in answer.message, answer.message


def test_deactivate_gives_a_running_goal_its_result(start_vlm_node, untrained_llava, test_node):
    node = start_vlm_node(model=str(untrained_llava), **LONG)
    node.wait_state('active')
    streaming = threading.Event()
    client, _, handle = send_goal(test_node, 'keep going', lambda _: streaming.set())
    assert streaming.wait(TIMEOUT), 'no feedback: not generating'
    assert transition(test_node, 'deactivate')
    result = wait_future(handle.get_result_async(), TIMEOUT, 'the goal result')
    assert _interrupted(result.result.plan), result.result.plan
    assert 'deactivated' in result.result.plan.message
    rejected = wait_future(client.send_goal_async(GeneratePlan.Goal(instruction='x')), TIMEOUT,
                           'the goal response of an inactive node')
    assert not rejected.accepted
    client.destroy()


def test_deactivate_while_generating_answers_every_instruction_without_waiting(
        start_vlm_node, untrained_llava, test_node):
    node, texts = _busy_node(start_vlm_node, untrained_llava, waiting=6)
    assert transition(test_node, 'deactivate')
    answered = node.answers(texts)
    assert all(_interrupted(p) and 'deactivated' in p.message for p in answered), \
        [p.message for p in answered]
    assert len([p for p in node.plans.items() if p.instruction in texts]) == len(texts)
