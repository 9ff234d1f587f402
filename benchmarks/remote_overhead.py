"""What the openai backend adds to an answer: the same model in process vs behind a server.

    scripts/with-env python3 benchmarks/remote_overhead.py [--model DIR] [--runs 20]

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
import pathlib
import statistics
import sys
import tempfile
import time

import openai
from ros_overhead import INSTRUCTION, frame, tiny_model
from vlm_ros.engine import EngineConfig, RemoteConfig, Request, make_engine
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.preprocess import encode_jpeg, resize_max_side

# The test suite's harness starts, checks and stops the real server; one copy of that code.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / 'vlm_ros' / 'test'))
from serve_harness import ServedModel  # noqa: E402

NEW_TOKENS = 64
FRAMES = ((480, 640), (1080, 1920))


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
        server = ServedModel(model, pathlib.Path(scratch) / 'serve.log')
        server.start()
        config = EngineConfig(model=model, device='cpu', dtype='float32',
                              max_new_tokens=NEW_TOKENS)
        local = VlmEngine(config)
        remote = make_engine(EngineConfig(model=model, max_new_tokens=NEW_TOKENS,
                                          backend='openai',
                                          remote=RemoteConfig(base_url=server.base_url)))
        local.load()
        remote.load()
        try:
            print('| frame | in-process ms (TTFT) | remote ms (TTFT) | remote overhead ms | '
                  'JPEG encode ms | JPEG kB | HTTP round trip ms | remote, not streamed ms | '
                  'tokens | same text |')
            print('|---|---:|---:|---:|---:|---:|---:|---:|---:|---|')
            for height, width in FRAMES:
                row = measure(local, remote, frame(height, width), args.runs)
                print(f"| {width}x{height} | {row['local_ms']:.1f} ({row['local_ttft_ms']:.1f}) | "
                      f"{row['remote_ms']:.1f} ({row['remote_ttft_ms']:.1f}) | "
                      f"{row['remote_ms'] - row['local_ms']:.1f} | {row['jpeg_ms']:.1f} | "
                      f"{row['jpeg_kb']:.1f} | {row['http_ms']:.1f} | {row['whole_ms']:.1f} | "
                      f"{row['tokens']} | {row['same_text']} |", flush=True)
        finally:
            remote.unload()
            local.unload()
            server.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
