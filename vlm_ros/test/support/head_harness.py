"""vlm_action_head as a process beside the test: started, heard, and stopped cleanly."""

import contextlib
import pathlib
import subprocess
import tempfile

from node_harness import TIMEOUT, node_executable
from ros_harness import stop_process
from waiting import wait_until


@contextlib.contextmanager
def action_head(test_node, head_file, action_type):
    """Run vlm_action_head with head_file; yield a Collector of what it publishes on action.

    Its publisher is matched before the body runs; the Collector's ``log()`` returns what the
    head has said so far (its log goes to a file, read while it runs). On the way out it must
    exit 0 on SIGINT.
    """
    actions = test_node.collect(action_type, '/action')
    with tempfile.TemporaryDirectory() as folder:
        log_path = pathlib.Path(folder) / 'head.log'
        with log_path.open('a') as log:  # appended to: reading never moves where it writes
            head = subprocess.Popen([node_executable('vlm_action_head'), '--ros-args', '-p',
                                     f'head:={head_file}'], stdout=log, stderr=subprocess.STDOUT)
        actions.log = log_path.read_text
        try:
            wait_until(lambda: actions.subscription.get_publisher_count() > 0, TIMEOUT,
                       "the head's action publisher")
            yield actions
        finally:
            code, _, _ = stop_process(head)
            said = log_path.read_text()
    assert code == 0, said[-2000:]
