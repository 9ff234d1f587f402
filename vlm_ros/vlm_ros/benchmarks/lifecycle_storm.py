"""Lifecycle storm: configure/activate/deactivate/cleanup cycles with traffic. Prints a table.

    scripts/with-env python3 -m vlm_ros.benchmarks.lifecycle_storm [--cycles 100] [--model DIR]

A vlm_node process gets a 20 Hz camera and an instruction every 50 ms while a lifecycle client
cycles it through configure, activate, deactivate and cleanup as fast as the transitions
return. Reported every 10 cycles: transitions that failed, whether the process is alive, and
its resident memory after cleanup (model released), so growth per cycle shows.
"""

import argparse
import os
import subprocess
import time
import uuid

import rclpy
from ament_index_python.packages import get_package_prefix
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from std_msgs.msg import String

from ..spin import SpinThread
from .node_peer import rss_mib, session

NODE = os.path.join(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_node')
CYCLE = (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE,
         Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP)


def main() -> int:
    """Run the storm; exit 1 when a transition failed or the node died."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cycles', type=int, default=100)
    parser.add_argument('--model', help='default: a tiny LLaVA with random weights')
    args = parser.parse_args()
    with session(args.model) as (peer, model, scratch):
        client = peer.create_client(ChangeState, '/vlm_node/change_state')
        peer.create_timer(0.05, lambda: peer.tasks.publish(String(data=uuid.uuid4().hex)))
        spinner = SpinThread([peer])
        log = open(os.path.join(scratch, 'node.log'), 'w+')  # a pipe would fill and block
        proc = subprocess.Popen([NODE, '--ros-args', '-p', f'model:={model}', '-p',
                                 'device:=cpu', '-p', 'autostart:=false', '-p',
                                 'wait_for_image:=0.2'], stdout=log, stderr=subprocess.STDOUT)
        failed = 0
        try:
            assert client.wait_for_service(timeout_sec=120), 'no lifecycle service'
            print('| cycles | failed transitions | alive | RSS after cleanup MiB | s |\n'
                  '|---:|---:|---|---:|---:|', flush=True)
            started, first = time.monotonic(), None
            for cycle in range(1, args.cycles + 1):
                for transition in CYCLE:
                    request = ChangeState.Request(transition=Transition(id=transition))
                    future = client.call_async(request)
                    deadline = time.monotonic() + 60
                    while not future.done() and time.monotonic() < deadline:
                        time.sleep(0.005)
                    failed += not (future.done() and future.result().success)
                if proc.poll() is not None:
                    break
                rss = rss_mib(proc.pid)
                first = first or rss
                if cycle % 10 == 0 or cycle == 1:
                    print(f'| {cycle} | {failed} | True | {rss:.0f} | '
                          f'{time.monotonic() - started:.0f} |', flush=True)
            alive = proc.poll() is None
            if not alive:
                print(f'| {cycle} | {failed} | False (exit {proc.returncode}) | | |')
            else:
                growth = (rss_mib(proc.pid) - first) / max(1, cycle - 1)
                print(f'\n{cycle} cycles, {failed} failed transitions; RSS {first:.0f} -> '
                      f'{rss_mib(proc.pid):.0f} MiB ({growth:+.2f} MiB per cycle)')
        finally:
            if proc.poll() is None:
                proc.terminate()
            proc.wait(timeout=60)
            spinner.stop()
            rclpy.try_shutdown()
            log.seek(0)
            err = log.read()
            log.close()
        print(f"executor races with destroyed entities survived (vlm_ros.spin): "
              f"{err.count('raced a destroyed entity')}")
        if 'Traceback' in err:
            print(err[-3000:])
    return 0 if alive and not failed else 1


if __name__ == '__main__':
    raise SystemExit(main())
