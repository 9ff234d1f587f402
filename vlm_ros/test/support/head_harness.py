"""vlm_action_head as a process beside the test: started, heard, and stopped cleanly."""

import contextlib
import subprocess

from node_harness import TIMEOUT, node_executable
from ros_harness import stop_process
from waiting import wait_until


@contextlib.contextmanager
def action_head(test_node, head_file, action_type):
    """Run vlm_action_head with head_file; yield a Collector of what it publishes on action.

    Its publisher is matched before the body runs; on the way out it must exit 0 on SIGINT.
    """
    actions = test_node.collect(action_type, '/action')
    head = subprocess.Popen([node_executable('vlm_action_head'), '--ros-args', '-p',
                             f'head:={head_file}'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: actions.subscription.get_publisher_count() > 0, TIMEOUT,
                   "the head's action publisher")
        yield actions
    finally:
        code, _, err = stop_process(head)
    assert code == 0, err[-2000:]
