"""A spinning vlm_ros process exits 0 on SIGINT and SIGTERM, without rclpy's abort."""

import signal
import uuid

import pytest
from ros_harness import start_process, stop_process

from vlm_ros_msgs.msg import Plan


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
