"""What the openai backend adds to an answer: the same model in process vs behind a server.

    scripts/with-env python3 -m vlm_ros.benchmarks.remote_overhead [--model DIR] [--runs 20]

Both paths answer the same plan request on the same frame through the interface the node
drives: VlmEngine.run (in this process) and RemoteEngine.run (JPEG, HTTP on loopback, SSE
streaming) against `transformers serve` of the same checkpoint on this machine, greedy, so both
produce the same tokens. Each frame is resized to 640 px on its longer side on both paths
first. Times are wall-clock around run(), medians of --runs after two warm-ups; the two paths
take turns, so a slow spell of the machine hits both. Two more columns split the overhead: the
same request not streamed (the server's answer in one piece), and an HTTP round trip
(GET /models). A benchmark, not a test: it asserts nothing. Without --model, a tiny LLaVA is
built and trained on the plan (seconds, offline).
"""

import argparse
import contextlib
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai

from ..engine import EngineConfig, RemoteConfig, Request, make_engine
from ..engine.local import VlmEngine
from ..engine.preprocess import encode_jpeg, resize_max_side
from .ros_overhead import INSTRUCTION, frame, tiny_model

NEW_TOKENS = 64
FRAMES = ((480, 640), (1080, 1920))
STARTUP_TIMEOUT = 120.0  # s; about 10 s on an idle 2-core machine


@contextlib.contextmanager
def served(model: str, log_path: pathlib.Path):
    """Run ``transformers serve`` of model on a free loopback port; yield its API root.

    The server's output goes to log_path, whose tail is the error when it exits or does not
    answer /health within STARTUP_TIMEOUT.
    """
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    executable = pathlib.Path(sys.executable).with_name('transformers')
    with log_path.open('a') as log:
        proc = subprocess.Popen([str(executable), 'serve', model, '--host', '127.0.0.1',
                                 '--port', str(port), '--device', 'cpu'],
                                env={**os.environ, 'HF_HUB_OFFLINE': '1'}, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'transformers serve did not start:\n'
                                   f'{log_path.read_text()[-3000:]}')
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/health', timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield f'http://127.0.0.1:{port}/v1'
    finally:
        proc.terminate()
        proc.wait(30)


def timed(engine, request) -> tuple:
    """Answer request once; return (wall seconds, the result)."""
    start = time.perf_counter()
    result = engine.run([request])[0]
    return time.perf_counter() - start, result


def median_ms(work, runs: int) -> float:
    """Median milliseconds of work() over runs."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(local, remote, rgb, runs: int) -> dict:
    """Median wall time and time to first token of both engines; what the overhead is made of."""
    request = Request('plan', rgb, INSTRUCTION)
    client = openai.OpenAI(base_url=remote.remote.base_url, api_key='EMPTY', max_retries=0)
    whole = {key: value for key, value in remote.payload(request).items()
             if key not in ('stream', 'stream_options')}
    for _ in range(2):
        timed(local, request)
        timed(remote, request)
    samples = {'local': [], 'remote': []}
    for _ in range(runs):
        for name, engine in (('local', local), ('remote', remote)):
            samples[name].append(timed(engine, request))
    texts = {result.text for pairs in samples.values() for _, result in pairs}
    quality = remote.remote.jpeg_quality
    resize_ms = median_ms(lambda: resize_max_side(rgb, 640), runs)  # on both paths
    client.chat.completions.create(**whole)  # warm-up
    row = {'jpeg_ms': median_ms(lambda: encode_jpeg(rgb, 640, quality), runs) - resize_ms,
           'whole_ms': median_ms(lambda: client.chat.completions.create(**whole), runs),
           'http_ms': median_ms(client.models.list, runs),
           'jpeg_kb': len(encode_jpeg(rgb, 640, quality)) / 1000,
           'same_text': len(texts) == 1,
           'tokens': samples['local'][0][1].output_tokens}
    for name, pairs in samples.items():
        row[f'{name}_ms'] = 1000 * statistics.median(seconds for seconds, _ in pairs)
        row[f'{name}_ttft_ms'] = 1000 * statistics.median(r.time_to_first_token
                                                          for _, r in pairs)
    return row


def main() -> int:
    """Start the server, load both engines, print one table row per frame size."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', help='model directory (default: a trained tiny LLaVA)')
    parser.add_argument('--runs', type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or tiny_model(scratch)
        with served(model, pathlib.Path(scratch) / 'serve.log') as base_url:
            _compare(model, base_url, args.runs)
    return 0


def _compare(model: str, base_url: str, runs: int) -> None:
    """Load the model in process and through the server; print one row per frame size."""
    config = EngineConfig(model=model, device='cpu', dtype='float32',
                          max_new_tokens=NEW_TOKENS)
    local = VlmEngine(config)
    remote = make_engine(EngineConfig(model=model, max_new_tokens=NEW_TOKENS,
                                      backend='openai',
                                      remote=RemoteConfig(base_url=base_url)))
    local.load()
    remote.load()
    try:
        print('| frame | in-process ms (TTFT) | remote ms (TTFT) | remote overhead ms | '
              'JPEG encode ms | JPEG kB | HTTP round trip ms | remote, not streamed ms | '
              'tokens | same text |')
        print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|')
        for height, width in FRAMES:
            row = measure(local, remote, frame(height, width), runs)
            print(f"| {width}x{height} | {row['local_ms']:.1f} ({row['local_ttft_ms']:.1f}) | "
                  f"{row['remote_ms']:.1f} ({row['remote_ttft_ms']:.1f}) | "
                  f"{row['remote_ms'] - row['local_ms']:.1f} | {row['jpeg_ms']:.1f} | "
                  f"{row['jpeg_kb']:.1f} | {row['http_ms']:.1f} | {row['whole_ms']:.1f} | "
                  f"{row['tokens']} | {row['same_text']} |", flush=True)
    finally:
        remote.unload()
        local.unload()


if __name__ == '__main__':
    sys.exit(main())
