"""The README's operator commands (`ros2 lifecycle|param|topic|action`) as an operator types them.

One node serves the module: the README's own launch line, with the tiny trained model in place
of the hub id, and a camera on its image topic. Each further line of the README's operator block
then runs in a process of its own, as typed in a second terminal, and its exit code and output
are checked. The first graph query starts the `ros2` daemon, which may not have discovered the
node yet: that one query is repeated until it finds it. The daemon is stopped at the end, so it
never outlives the tests.
"""

import json
import os
import re
import shlex
import subprocess
import uuid

import pytest
import ros_harness
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from doc_blocks import blocks
from engine_fixtures import DEFAULT_MODEL, TARGETS
from launch_harness import Launch, launch_command
from node_harness import TIMEOUT, camera, diag_values
from sensor_msgs.msg import Image
from waiting import wait_until

from vlm_ros_msgs.msg import Plan

OPERATOR_BLOCK = [each.body for each in blocks()
                  if each.kind == 'tested' and 'test_operator_cli.py' in each.marker]
LINES = [shlex.split(line, comments=True) for block in OPERATOR_BLOCK
         for line in block.replace('\\\n', ' ').splitlines() if line.strip()]
NODE = '/vlm_node'
STEPS = [step['instruction'] for step in json.loads(TARGETS['plan'][1])['steps']]
LIMIT = 32  # the README's `ros2 param set /vlm_node max_new_tokens 32`


def ros2(words: list, timeout: float = 120.0) -> subprocess.CompletedProcess:
    """Run one command line in its own process, as the operator's shell would."""
    return subprocess.run(words, capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def until_found(words: list, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """Run a graph query again while the daemon has not discovered the node yet."""
    answers = []

    def found():
        answers.append(ros2(words))
        return 'Node not found' not in answers[-1].stdout + answers[-1].stderr
    wait_until(found, timeout, f'{shlex.join(words)} to find {NODE}: {answers[-1:]}')
    return answers[-1]


@pytest.fixture(scope='module')
def operator(rclpy_context, trained_tiny):
    """Start the README's launch line with the tiny model; Ctrl-C it and stop the daemon after.

    Both ends are checked: the launch exits cleanly, and no daemon is left running.
    """
    words = LINES[0]
    assert words[:4] == [*launch_command(), 'vlm_ros', 'vlm.launch.py'] and words[-1] == '&'
    arguments = [f'model:={trained_tiny("llava")}' if word == f'model:={DEFAULT_MODEL}' else word
                 for word in words[4:-1]]
    assert arguments != words[4:-1], f'no model:={DEFAULT_MODEL} to replace in {words}'
    image_topic = next(word.split(':=')[1] for word in arguments if word.startswith('image:='))
    test_node = ros_harness.TestNode('test_operator_cli')
    launch = Launch(test_node, *arguments, namespace='')
    frames = test_node.node.create_publisher(Image, image_topic, 10)
    make = camera(uuid.uuid4().hex)
    test_node.node.create_timer(0.05, lambda: frames.publish(
        make(test_node.node.get_clock().now().to_msg())))
    try:
        launch.wait_state('active')
        yield launch, test_node
    finally:
        stopped = ros2(['ros2', 'daemon', 'stop'])
        status = ros2(['ros2', 'daemon', 'status'])
        code, out = launch.stop()
        test_node.close()
    assert stopped.returncode == 0, stopped.stderr
    assert 'The daemon is not running' in status.stdout, status.stdout + status.stderr
    assert code == 0 and 'process has finished cleanly' in out, out[-3000:]


def test_operator_block_runs_as_typed(operator):
    launch, test_node = operator
    verbs = [' '.join(words[:3]) for words in LINES[1:]]
    assert verbs == ['ros2 lifecycle get', 'ros2 param get', 'ros2 topic echo', 'ros2 topic pub',
                     'ros2 param set', 'ros2 action send_goal', 'ros2 lifecycle set',
                     'ros2 lifecycle get', 'ros2 lifecycle set'], LINES
    (get_state, get_limit, echo, publish, set_limit, send_goal, deactivate, get_again,
     activate) = LINES[1:]

    assert until_found(get_state).stdout.strip() == 'active [3]'
    _ok(get_limit, 'Integer value is: 128')

    # `&`: echo runs beside the next lines; pub must come after it subscribed, as it does in
    # a terminal (starting pub takes the operator, and the process, longer than that).
    assert echo[-1] == '&'
    listener = subprocess.Popen(echo[:-1], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=os.environ.copy())
    seen = test_node.collect(Plan, '/plan')  # says which side lost it, should echo get none
    diagnostics = test_node.collect(DiagnosticArray, '/diagnostics')

    def matched(msg) -> bool:
        """Whether the node's publisher matched every subscription this process sees.

        Seen here is not yet matched there: on a loaded machine each process discovers at its
        own pace, and a plan published before the match never reached echo (ci128, Jazzy).
        """
        graph = test_node.node.count_subscribers('/plan')  # `seen` and echo, once discovered
        return graph > 1 and int(diag_values(msg).get('plan_subscribers', -1)) == graph
    listening = diagnostics.wait_for(lambda msg: listener.poll() is not None or matched(msg),
                                     TIMEOUT, 'the node to match ros2 topic echo on /plan')
    after = diagnostics.from_now()  # before echo matched, the node counted fewer already
    assert publish[4:6] == ['--keep-alive', '1.0'], publish
    _ok(publish, 'publishing #1')
    try:
        out, err = listener.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        listener.kill()
        pytest.fail(f'ros2 topic echo printed no plan in {TIMEOUT} s; this process saw '
                    f'{len(seen.items())} on /plan: {seen.items()}')
    assert listener.returncode == 0, err
    subscribers = int(diag_values(listening).get('plan_subscribers', 0))
    after(lambda msg: int(diag_values(msg).get('plan_subscribers', -1)) < subscribers, TIMEOUT,
          'the node to count echo gone from /plan')
    plan = yaml.safe_load(out.split('\n---')[0])
    assert plan['instruction'] == TARGETS['plan'][0] == yaml.safe_load(publish[-1])['data']
    # echo shortens strings to 128 characters (text: '{"steps": ... in the bi...'); the steps
    # are shorter, and the whole plan.
    assert plan['status'] == 0 and plan['form'] == 'constrained', plan
    assert [step['instruction'] for step in plan['steps']] == STEPS, plan
    assert plan['output_tokens'] > LIMIT  # so the next plan is cut by the limit, not shorter

    assert set_limit[-2:] == ['max_new_tokens', str(LIMIT)]
    _ok(set_limit, 'Set parameter successful')
    goal = _ok(send_goal, 'Goal finished with status: SUCCEEDED')
    assert 'Goal accepted' in goal, goal
    result = goal.split('Result:')[1]
    assert f'instruction: {TARGETS["plan"][0]}' in result, result
    assert 0 < int(re.search(r'output_tokens: (\d+)', result)[1]) <= LIMIT, result

    _ok(deactivate, 'Transitioning successful')
    _ok(get_again, 'inactive [2]')
    _ok(activate, 'Transitioning successful')
    _ok(get_state, 'active [3]')


def test_a_refused_parameter_prints_the_nodes_reason(operator, tmp_path):
    """`ros2 param set` exits 0 either way: the operator (or a script) reads what it printed."""
    refused = until_found(['ros2', 'param', 'set', NODE, 'model', str(tmp_path)])
    assert refused.returncode == 0 and refused.stdout == '', refused
    assert refused.stderr.strip() == ('Setting parameter failed: model needs a model reload: '
                                      'deactivate and cleanup the node, then set it')
    kept = ros2(['ros2', 'param', 'get', NODE, 'model']).stdout
    assert kept.startswith('String value is: ') and str(tmp_path) not in kept, kept


def _ok(words: list, expected: str) -> str:
    """Run a README line; it must exit 0 and print a line that starts with expected.

    Again while ros2cli has not discovered the node: each line is a new process with its own
    view of the graph, which a loaded machine fills slowly (ci93: 'Node not found' right after
    the lifecycle line had found it). An operator would run it again; so does this.
    """
    result = until_found(words)
    assert result.returncode == 0, (words, result.stdout, result.stderr)
    assert re.search(f'^{re.escape(expected)}', result.stdout, re.MULTILINE), \
        (words, result.stdout, result.stderr)
    return result.stdout
