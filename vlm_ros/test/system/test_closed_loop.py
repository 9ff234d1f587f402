"""Closed-loop plans over DDS: vlm_node with execute_plans, and the scripted_vla_head process.

The head is the executable a user would start in place of a VLA policy; the node runs the
tiny LLaVA trained on the plan, re-plan and step-check prompts (conftest.closed_loop_llava).
"""

import signal
import subprocess
import sys

import pytest
from action_msgs.msg import GoalStatus
from doc_blocks import block
from engine_fixtures import CLOSE, LOOP_INSTRUCTION, PICK, PLACE
from loop_harness import DONE, FAILED, PREEMPTED, Loop, start_head, stop_head
from node_harness import TIMEOUT, ActionFeedback, set_ok, transition
from ros_harness import stop_process, wait_future
from vlm_ros.compat import ActionClient
from waiting import wait_until

from vlm_ros_msgs.action import ExecutePlan
from vlm_ros_msgs.msg import Plan

STEPS = [PICK[0], PLACE[0], CLOSE[0]]


@pytest.fixture
def loop(start_vlm_node, closed_loop_llava, test_node):
    """Return a starter: node parameters -> a Loop on an executing node, camera on red."""
    def start(**values):
        node = start_vlm_node(**{'model': str(closed_loop_llava), 'execute_plans': True,
                                 **values})
        node.wait_state('active')
        running = Loop(node, test_node)
        running.camera('red')
        return running
    return start


@pytest.fixture
def head():
    """Return a starter: (loop, script) -> a scripted_vla_head process matched by the node.

    The node's StepCommand publisher then counts the head beside the test's own subscription.
    Each head must exit 0 at teardown.
    """
    heads = []

    def start(running: Loop, script: str = '', step_time: float = 0.2):
        heads.append(start_head(script, step_time))
        running.node.wait_diag(lambda v: int(v.get('step_subscribers', 0)) >= 2, 30.0,
                               'the node to match the head')
        return heads[-1]
    yield start
    for process in heads:
        stop_head(process)


def test_three_steps_go_out_in_order_and_the_plan_ends_done(loop, head):
    running = loop()
    process = head(running)
    plan = running.instruct()
    assert plan.status == Plan.STATUS_OK and [s.instruction for s in plan.steps] == STEPS
    end = running.ended(plan.request_id)
    assert end.state == DONE and list(end.done) == STEPS, end
    # Other topics than /plan_progress: nothing orders their arrival here before DONE's.
    running.steps.wait_for(lambda s: s.plan_id == plan.request_id and s.index == 2, 10.0,
                           'the last StepCommand')
    running.node.vla.wait_for(lambda m: m.data == STEPS[-1], 10.0, 'the last vla_instruction')
    assert running.commands_of(plan.request_id, 3) == [(0, i, s) for i, s in enumerate(STEPS)]
    commands = [s for s in running.steps.items() if s.plan_id == plan.request_id]
    assert all(s.header == plan.header and s.count == 3 for s in commands)
    texts = [m.data for m in running.node.vla.items()]
    assert texts[-3:] == STEPS  # heads that take plain text get every step too
    values = running.node.wait_diag(lambda v: v.get('plans_done') == '1', 10.0, 'plans_done')
    assert values['plan_executing'] == ''
    later = running.node.diag_from_now()  # before the head came, it was '1' too
    stop_head(process)  # the head goes: only the test's own subscription is left
    later(lambda v: v.get('step_subscribers') == '1', 30.0, 'the node to see the head gone')


def test_a_failed_second_step_replans_with_the_first_done_and_resumes(loop, head):
    running = loop()
    head(running, 'succeed,fail')
    plan = running.instruct()
    replan = running.replanned(plan.request_id)
    assert list(replan.done) == [PICK[0]] and 'the script says this step fails' in \
        replan.message
    end = running.ended(plan.request_id)
    assert end.state == DONE and end.attempt == 1, end
    # The model answers LOOP_REPLAN only to the prompt that lists step 1 as done.
    assert running.commands_of(plan.request_id, 4) == [
        (0, 0, PICK[0]), (0, 1, PLACE[0]), (1, 0, PLACE[0]), (1, 1, CLOSE[0])]
    assert [s.instruction for s in end.steps] == [PLACE[0], CLOSE[0]]
    assert list(end.done) == STEPS


def test_silence_replans_after_step_timeout_then_fails_with_the_reason(loop, head):
    running = loop(step_timeout=1.0, max_replans=2)
    head(running, 'silent,silent,silent')
    plan = running.instruct()
    end = running.ended(plan.request_id)
    assert end.state == FAILED, end
    assert 'within step_timeout 1 s' in end.message and 'max_replans 2' in end.message
    assert running.commands_of(plan.request_id, 3) == [(a, 0, PICK[0]) for a in range(3)]
    running.node.wait_diag(lambda v: (v.get('plans_failed'), v.get('plan_replans'),
                                      v.get('plan_executing')) == ('1', '2', ''),
                           10.0, 'the failed plan and its re-plans counted, none executing')


def test_a_new_instruction_preempts_the_running_plan(loop, head):
    running = loop()
    head(running, 'silent')
    first = running.instruct()
    running.step(first.request_id, 0)
    refused = running.instruct('   ')  # an empty instruction is refused and stops nothing
    assert refused.status == Plan.STATUS_BAD_INPUT
    values = running.node.wait_diag(lambda v: v.get('status_bad_input') == '1', 10.0,
                                    'the refusal counted')
    assert values['plan_executing'] == first.request_id, values
    second = running.instruct()
    end = running.ended(first.request_id)
    assert end.state == PREEMPTED and 'new instruction' in end.message
    assert running.step(second.request_id, 0).instruction == PICK[0]
    assert running.ended(second.request_id).state == DONE
    running.node.wait_diag(lambda v: (v.get('plans_preempted'), v.get('plans_done'),
                                      v.get('plan_executing')) == ('1', '1', ''),
                           10.0, 'both ends counted, and no plan executing any more')


def test_a_plan_that_is_not_whole_or_not_ok_is_not_executed_and_progress_says_why(loop):
    """Each instruction's plan_progress ends, also when its plan is not executed.

    A cut plan ran its steps and ended DONE: the robot did part of the task, or a step the
    plan grammar wrote.
    """
    running = loop()
    whole = running.instruct()
    assert whole.form == Plan.FORM_CONSTRAINED, whole
    running.step(whole.request_id, 0)
    set_ok(running.node.test_node, max_new_tokens=whole.output_tokens - 3)
    cut = running.instruct()
    assert (cut.status, cut.form) == (Plan.STATUS_OK, Plan.FORM_CONSTRAINED_CLOSED) and \
        cut.steps, cut
    assert running.ended(whole.request_id).state == PREEMPTED  # by the new instruction
    end = running.ended(cut.request_id)
    assert end.state == FAILED and end.message.startswith(
        'not executed: the plan is not whole (form constrained_closed): max_new_tokens ran '
        'out') and end.message.endswith('raise max_new_tokens'), end
    set_ok(running.node.test_node, max_new_tokens=1)  # no plan at all
    none = running.instruct()
    assert not none.steps, none
    end = running.ended(none.request_id)
    assert end.state == FAILED and end.message.startswith('no plan to execute: '), end
    set_ok(running.node.test_node, max_new_tokens=whole.output_tokens)
    again = running.instruct()
    running.step(again.request_id, 0)  # after any command for the two before, on one topic
    assert {s.plan_id for s in running.steps.items()} == {whole.request_id, again.request_id}
    running.node.wait_diag(lambda v: (v.get('plans_failed'), v.get('plans_preempted')) ==
                           ('2', '1'), 10.0, 'the two not executed counted as failed')


def test_verify_steps_turns_an_unconfirmed_success_into_a_replan(loop):
    running = loop(verify_steps=True, max_replans=0)
    plan = running.instruct()
    step = running.step(plan.request_id, 0)
    running.camera('blue')  # the block is not picked: the step check answers no
    running.report(step, 1)  # SUCCEEDED, says the head
    end = running.ended(plan.request_id)
    assert end.state == FAILED and "the VLM answered 'no'" in end.message, end
    assert step.instruction in end.message


def test_feedback_for_other_plans_and_stale_steps_is_ignored_and_counted(loop):
    running = loop()
    plan = running.instruct()
    step = running.step(plan.request_id, 0)
    for stale in (('other', 0, 0), (plan.request_id, 1, 0), (plan.request_id, 0, 3)):
        fake = type(step)(plan_id=stale[0], index=stale[1], attempt=stale[2])
        running.report(fake, 1)
    running.node.wait_diag(lambda v: v.get('plan_feedback_ignored') == '3', 10.0,
                           'three ignored reports')
    assert running.commands_of(plan.request_id) == [(0, 0, PICK[0])]


@pytest.mark.parametrize('sig', [signal.SIGTERM, signal.SIGINT], ids=['SIGTERM', 'SIGINT'])
def test_a_signal_mid_plan_publishes_preempted_and_exits_0(loop, head, sig):
    running = loop()
    head(running, 'silent')
    plan = running.instruct()
    running.step(plan.request_id, 0)
    code, err = running.node.stop(sig)
    assert code == 0, err[-3000:]
    end = running.ended(plan.request_id, timeout=5.0)
    assert end.state == PREEMPTED and 'shutting down' in end.message, end



def test_deactivate_mid_plan_preempts_it_and_plans_run_again_after_activate(loop, head,
                                                                             test_node):
    """A head that is executing a step is told the plan ended, not left waiting for ever."""
    running = loop()
    head(running, 'silent')
    plan = running.instruct()
    running.step(plan.request_id, 0)
    assert transition(test_node, 'deactivate')
    end = running.ended(plan.request_id)
    assert end.state == PREEMPTED and 'node deactivated' in end.message, end
    running.node.wait_diag(lambda v: (v.get('state'), v.get('plans_preempted'),
                                      v.get('plan_executing')) == ('inactive', '1', ''),
                           10.0, 'the preempted plan counted, none executing')
    assert transition(test_node, 'activate')
    running.camera('red')
    again = running.instruct()
    assert running.step(again.request_id, 0).instruction == PICK[0]
    assert running.ended(again.request_id).state == DONE

def test_the_readme_vla_head_drives_a_plan_to_done(loop, tmp_path):
    head = block('import rclpy\nfrom rclpy.executors')  # in README.md or docs/*.md
    assert head.language == 'python', head
    body = head.body
    script = tmp_path / 'vla_head.py'
    script.write_text(body)
    running = loop()
    readme_head = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
    try:
        running.node.wait_diag(lambda v: int(v.get('step_subscribers', 0)) >= 2, 30.0,
                               'the node to match the README head')
        plan = running.instruct()
        end = running.ended(plan.request_id)
        assert end.state == DONE and list(end.done) == STEPS, end
    finally:
        code, _, err = stop_process(readme_head)
    assert code == 0, err[-2000:]


def _execute_goal(test_node, instruction=LOOP_INSTRUCTION):
    """Send an ~/execute_plan goal; return (client, accepted handle, its feedback so far).

    The last is a function: each call returns the goal's feedback progress received until then.
    """
    client = ActionClient(test_node.node, ExecutePlan, '/vlm_node/execute_plan')
    assert client.wait_for_server(timeout_sec=30.0), 'execute_plan never appeared'
    recorded = ActionFeedback(test_node, '/vlm_node/execute_plan', ExecutePlan)
    handle = wait_future(client.send_goal_async(ExecutePlan.Goal(instruction=instruction)), 30.0,
                         'goal acceptance')
    assert handle.accepted
    return client, handle, lambda: [feedback.progress for feedback in recorded.of(handle)]


def test_the_execute_plan_action_streams_progress_and_succeeds_when_done(loop, head,
                                                                        test_node):
    running = loop(execute_plans=False)  # the action executes whatever the parameter says
    head(running)
    client, handle, feedback = _execute_goal(test_node)
    result = wait_future(handle.get_result_async(), 60.0, 'the result')
    assert result.status == GoalStatus.STATUS_SUCCEEDED
    assert result.result.progress.state == DONE and list(result.result.progress.done) == STEPS
    # Feedback is a topic and the result a service: the last progress may land after it.
    wait_until(lambda: len(feedback()) == 4, 10.0, 'the DONE progress as feedback')
    assert [(p.state, p.index) for p in feedback()] == [(0, 0), (0, 1), (0, 2), (DONE, 2)]
    assert running.commands_of(result.result.progress.plan_id, 3) == [
        (0, i, s) for i, s in enumerate(STEPS)]
    # An instruction that gets no OK plan ends its goal aborted, with the plan's status.
    second, refused, _ = _execute_goal(test_node, '   ')
    result = wait_future(refused.get_result_async(), 30.0, 'the result of a refused goal')
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.progress.state == FAILED
    assert result.result.progress.message.startswith('no plan to execute: BAD_INPUT: ')
    client.destroy()
    second.destroy()


def test_cancelling_an_execute_plan_goal_preempts_its_plan(loop, head, test_node):
    running = loop()
    head(running, 'silent')
    client, handle, _ = _execute_goal(test_node)
    step = running.steps.wait_for(lambda s: s.index == 0, 30.0, 'step 0')
    wait_future(handle.cancel_goal_async(), 30.0, 'the cancel response')
    result = wait_future(handle.get_result_async(), 30.0, 'the result')
    assert result.status == GoalStatus.STATUS_CANCELED
    progress = result.result.progress
    assert progress.state == PREEMPTED and progress.plan_id == step.plan_id
    assert 'cancelled by the action client' in progress.message
    client.destroy()


def test_sigterm_answers_an_executing_goal_preempted_before_the_exit(loop, head, test_node):
    running = loop()
    head(running, 'silent')
    client, handle, _ = _execute_goal(test_node)
    running.steps.wait_for(lambda s: s.index == 0, 30.0, 'step 0')
    results = handle.get_result_async()
    code, err = running.node.stop(signal.SIGTERM)
    assert code == 0, err[-3000:]
    assert 'shutdown: the requests pending were answered' in err, err[-3000:]
    result = wait_future(results, 5.0, f'the result, sent before the exit; node log:\n'
                         f'{err[-3000:]}')
    assert result.status == GoalStatus.STATUS_ABORTED
    assert result.result.progress.state == PREEMPTED
    assert 'shutting down' in result.result.progress.message
    client.destroy()


# A supervisor (a behaviour tree, say) that sends an ~/execute_plan goal and spins.
SUPERVISOR = """
import sys
import rclpy
from vlm_ros.compat import ActionClient
from vlm_ros_msgs.action import ExecutePlan
rclpy.init()
node = rclpy.create_node('supervisor')
client = ActionClient(node, ExecutePlan, '/vlm_node/execute_plan')
client.wait_for_server()
client.send_goal_async(ExecutePlan.Goal(instruction=sys.argv[1]))
rclpy.spin(node)
"""


def test_a_killed_supervisors_execute_plan_goal_ends_its_plan_preempted(loop, head):
    """Nobody would take the result, nor stop the robot: the plan ends once the client is gone.

    A killed process leaves the DDS graph when its participant's lease (20 s) runs out.
    """
    running = loop()
    head(running, 'silent')
    supervisor = subprocess.Popen([sys.executable, '-c', SUPERVISOR, LOOP_INSTRUCTION],
                                  start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        step = running.steps.wait_for(lambda s: s.index == 0, TIMEOUT, 'the first step')
    finally:
        supervisor.kill()
        supervisor.wait()
    end = running.ended(step.plan_id, timeout=TIMEOUT + 30.0)
    assert end.state == PREEMPTED and end.message.endswith('the action client is gone'), end
