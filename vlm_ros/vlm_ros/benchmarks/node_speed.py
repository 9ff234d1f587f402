"""vlm_benchmark --node: the node's own numbers, with concurrent instruction streams.

A vlm_node process (in its own namespace, so a robot's graph on the same domain is left
alone) gets a 10 Hz camera and N streams, each publishing an instruction, waiting for its
Plan, then publishing the next. The same node runs every --batch-sizes value in turn (set at
run time through max_batch_size). Reported per batch size: answers/s over the whole run, the
node's time to first token, and end-to-end latency (instruction published -> Plan received),
p50 and p95. A benchmark, not a test: it asserts nothing.
"""

import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.srv import SetParameters
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vlm_ros_msgs.msg import Plan

from ..bag.node_settings import fetch_parameters
from ..node.image_conversion import rgb_to_image
from ..spin import SWITCH_INTERVAL, SpinThread
from ..transport import large_frames_transport

KEEP_ALL = QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE)
INSTRUCTION = 'pick up the red block and put it in the bin'
ANSWERED = (Plan.STATUS_OK, Plan.STATUS_INVALID_OUTPUT)  # the model produced the text


class _Driver(Node):
    """Camera, instruction streams and Plan collection for one vlm_node under test."""

    def __init__(self, namespace: str, image_hw: tuple):
        super().__init__('vlm_benchmark_driver', namespace=namespace)
        frame = rgb_to_image(np.random.default_rng(0).integers(
            0, 255, (*image_hw, 3), dtype=np.uint8))
        camera = self.create_publisher(Image, 'image', 10)
        self.create_timer(0.1, lambda: camera.publish(frame))
        self._instructions = self.create_publisher(String, 'instruction', KEEP_ALL)
        self._waiting = {}  # instruction text -> [event, Plan or None]
        self._lock = threading.Lock()
        self.create_subscription(Plan, 'plan', self._on_plan, KEEP_ALL)
        self.params = self.create_client(SetParameters, 'vlm_node/set_parameters')
        self._status_name = f'{namespace}/vlm_node: vlm'
        self.diagnostics = {}
        self.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == self._status_name:
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def engine_counts(self, settle: float = 1.5) -> tuple:
        """Return (engine runs, requests) from /diagnostics, after its next 1 Hz message."""
        time.sleep(settle)
        values = self.diagnostics
        return int(values.get('engine_runs', 0)), int(values.get('engine_requests', 0))

    def _on_plan(self, plan: Plan) -> None:
        with self._lock:
            entry = self._waiting.get(plan.instruction)
        if entry is not None:
            entry[1] = plan
            entry[0].set()

    def wait_for_node(self, timeout: float) -> bool:
        """Wait until the node's instruction input and plan output are matched with ours."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._instructions.get_subscription_count() and self.count_publishers('plan') \
                    and self.params.service_is_ready():
                return True
            time.sleep(0.05)
        return False

    def ask(self, timeout: float):
        """Publish one unique instruction; return (seconds to its Plan, Plan) or None."""
        text = f'{INSTRUCTION} #{uuid.uuid4().hex[:8]}'
        entry = [threading.Event(), None]
        with self._lock:
            self._waiting[text] = entry
        start = time.perf_counter()
        self._instructions.publish(String(data=text))
        got = entry[0].wait(timeout)
        with self._lock:
            del self._waiting[text]
        return (time.perf_counter() - start, entry[1]) if got else None

    def set_batch_size(self, size: int, timeout: float) -> None:
        """Set the node's max_batch_size; raise when the node refuses or does not answer."""
        request = SetParameters.Request(parameters=[
            Parameter('max_batch_size', value=size).to_parameter_msg()])
        future = self.params.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not future.result().results[0].successful:
            raise RuntimeError(f'vlm_node did not take max_batch_size={size}')


def _run_streams(driver: _Driver, streams: int, per_stream: int, timeout: float) -> dict:
    """N closed-loop streams of per_stream instructions each; return the measurements."""
    answers, lost = [], []
    lock = threading.Lock()

    def stream():
        for _ in range(per_stream):
            got = driver.ask(timeout)
            with lock:
                if got:
                    answers.append(got)
                else:
                    lost.append(1)
    threads = [threading.Thread(target=stream) for _ in range(streams)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    answered = [(seconds, plan) for seconds, plan in answers if plan.status in ANSWERED]
    e2e = sorted(seconds for seconds, _ in answered)
    return {'answers': len(answered), 'other': len(answers) - len(answered) + len(lost),
            'per_s': len(answered) / wall,
            'ttft_p50': statistics.median(p.time_to_first_token for _, p in answered)
            if answered else float('nan'),
            'e2e_p50': statistics.median(e2e) if e2e else float('nan'),
            'e2e_p95': e2e[min(len(e2e) - 1, int(0.95 * len(e2e)))] if e2e else float('nan')}


def _node_params(model: str, args) -> dict:
    """Return the node's parameters: the command line's engine options, and the streams'."""
    return {'model': model, 'device': args.device, 'dtype': args.dtype,
            'decode_mode': args.decode_mode, 'max_new_tokens': args.new_tokens,
            # A YAML string: the JSON object would otherwise be read as a YAML mapping.
            'processor_kwargs': json.dumps(json.dumps(args.processor_kwargs)
                                           if args.processor_kwargs else ''),
            'queue_size': args.streams + 1, 'wait_for_image': 10.0,
            'batch_wait': args.batch_wait, 'cpu_threads': args.cpu_threads,
            'trust_remote_code': args.trust_remote_code}


def run_node_benchmark(model: str, args) -> str:
    """Start vlm_node on model, run every batch size, stop it; return the table."""
    from ament_index_python.packages import get_package_prefix

    namespace = f'/vlm_benchmark_{os.getpid()}'
    executable = os.path.join(get_package_prefix('vlm_ros'), 'lib', 'vlm_ros', 'vlm_node')
    streams = args.streams
    # The camera's 640x480 raw frames do not fit Fast DDS's default shared-memory segments;
    # instructions sent beside them as fragmented UDP reached every subscriber up to 2.8 s late
    # (a reliable retransmission, it looks like), in a p95 otherwise of about 0.4 s. The driver
    # and the node (the variable reaches its process) take the large-frames profile as every
    # vlm_ros process does (transport.py), before the driver's rclpy.init.
    transport = large_frames_transport()
    command = [executable, '--ros-args', '-r', f'__ns:={namespace}']
    for name, value in _node_params(model, args).items():
        command += ['-p', f'{name}:={value}']
    with tempfile.TemporaryFile('w+') as log:  # a pipe would fill and block the node
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        rclpy.init()
        driver = _Driver(namespace, args.image)
        # The driver is a Python process of 9 threads beside torch: as vlm_node does (spin.py,
        # node.py), hand the GIL over quickly and keep the collector off the imported modules,
        # so that its own stalls are not counted as the node's latency.
        sys.setswitchinterval(SWITCH_INTERVAL)
        gc.freeze()
        spinner = SpinThread([driver])
        try:
            if not driver.wait_for_node(timeout=120) or driver.ask(timeout=120) is None:
                log.seek(0)
                raise RuntimeError('vlm_node did not answer: ' + log.read()[-2000:])
            rows = []
            for size in args.batch_sizes:
                driver.set_batch_size(size, timeout=30)
                _run_streams(driver, streams, 1, timeout=300)  # warm-up at this size
                runs, requests = driver.engine_counts()
                measured = _run_streams(driver, streams, args.requests, 300)
                after = driver.engine_counts()
                measured['per_run'] = (after[1] - requests) / max(1, after[0] - runs)
                rows.append((size, measured))
            # As the node has them (a parameter it did not take would keep its default).
            decoding = driver.diagnostics.get('decode_mode', '?')
            threads = driver.diagnostics.get('cpu_threads', '?')
            values = fetch_parameters(driver, f'{namespace}/vlm_node', 30, threading.Event())
            batch_wait, processor = values['batch_wait'], values['processor_kwargs']
        finally:
            spinner.stop()
            rclpy.try_shutdown()
            proc.terminate()
            proc.wait(timeout=60)
    return _table(model, args, rows, batch_wait,
                  f'{decoding} decoding, {threads} CPU threads'
                  f'{", processor " + processor if processor else ""}, {transport}')


def _table(model: str, args, rows: list, batch_wait: float, setup: str) -> str:
    base = rows[0][1]['per_s'] if rows else float('nan')
    lines = [f'vlm_node on {model}: {args.streams} concurrent instruction streams x '
             f'{args.requests} each, {args.new_tokens} new tokens max, batch_wait '
             f'{batch_wait:g} s, '
             f'{args.image[1]}x{args.image[0]} camera, device {args.device}, {setup}', '',
             '| max_batch_size | requests per engine run | answers | other | answers/s | '
             'vs first row | TTFT p50 (node) | end-to-end p50 | p95 |',
             '|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
    for size, m in rows:
        lines.append(f"| {size} | {m['per_run']:.1f} | {m['answers']} | {m['other']} | "
                     f"{m['per_s']:.2f} | "
                     f"{m['per_s'] / base if base else float('nan'):.2f}x | "
                     f"{1000 * m['ttft_p50']:.1f} ms | "
                     f"{1000 * m['e2e_p50']:.1f} ms | {1000 * m['e2e_p95']:.1f} ms |")
    return '\n'.join(lines)
