"""Checks of the engine's CUDA paths, for a machine with a GPU (CI has none). Prints results.

    PYTHONPATH=vlm_ros python3 -m vlm_ros.benchmarks.cuda_checks

device/dtype resolution, preprocessing on the GPU (the same inputs as on the CPU; SmolVLM's
bit for bit, at its real sizes, with TF32 on and off), batched == single greedy tokens on the
GPU (float32), streaming, memory given back by unload(), the default decoding from CUDA graphs
(answers and log-probabilities as eager, graphs captured at load, the prefill compiled,
cancel, memory given back), frames prepared ahead on their own stream while a batch decodes,
compiled decoding (answers as eager, compiled at load only), and a real CUDA out-of-memory
error mapped to its kind.

    PYTHONPATH=vlm_ros python3 -m vlm_ros.benchmarks.cuda_checks --same-tokens MODEL_DIR

compares the greedy tokens of the default decoding with eager decoding on one model (bf16).
"""

import sys
import tempfile
import threading

import numpy as np
import torch
from PIL import Image
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

from ..engine import EngineConfig, Request
from ..engine.chat import build_inputs
from ..engine.gpu_preprocess import device_kwargs
from ..engine.local import VlmEngine
from ..engine.local.decoding import compiled_graphs, graph_decoder
from ..engine.local.exact_idefics3 import ExactIdefics3
from ..engine.local.generate import generate
from ..engine.local.loader import classify_error, resolve_device, resolve_dtype
from ..engine.local.streams import side_stream
from ..models import FAMILIES, build_tiny

# Tiny families whose greedy steps the 'graphs' mode replays (1-D and 3-D rotary positions).
GRAPHED = ('llava', 'idefics3', 'qwen2_vl')


def check(name: str, ok: bool, detail: str = '') -> bool:
    """Print one result line."""
    print(f"{'PASS' if ok else 'FAIL'} {name} {detail}", flush=True)
    return ok


def _loaded_on_cuda(path, **fields) -> VlmEngine:
    """Load path on CUDA: float32, 24 new tokens, plans free, unless ``fields`` say otherwise."""
    config = {'device': 'cuda', 'dtype': 'float32', 'max_new_tokens': 24,
              'constrain_plans': 'off', **fields}
    engine = VlmEngine(EngineConfig(model=str(path), **config))
    engine.load()
    return engine


def _check_compiled(path, requests, eager: list) -> bool:
    """decode_mode compiled on CUDA: compiled at load, eager's answers, no compile per request."""
    engine = _loaded_on_cuda(path, decode_mode='compiled')
    graphs = compiled_graphs()
    answers = [r.text for r in engine.run(requests)]
    engine.run(requests[:2])
    engine.run([requests[2]] * 5)
    ok = engine.decoding.mode == 'compiled' and answers == eager and compiled_graphs() == graphs
    engine.unload()
    return check(f'{path.name}: compiled decoding compiles at load, answers as eager', ok,
                 f'{engine.decoding.mode}, warm-up {engine.decoding.warm_up_seconds:.1f} s, '
                 f'{graphs} -> {compiled_graphs()} graphs')


def _check_graphs(path, requests, eager) -> list:
    """decode_mode auto on CUDA for a graph family: eager's tokens and log-probabilities."""
    before = torch.cuda.memory_allocated()
    engine = _loaded_on_cuda(path)
    captured = engine.status()['cuda_graphs']
    answers = engine.run(requests)
    single = [engine.run([r])[0] for r in requests]
    same = [(a.text, a.output_tokens) for a in answers] == [
        (e.text, e.output_tokens) for e in eager]
    gap = max(abs(a - b) for answer, expected in zip(answers, eager, strict=True)
              for a, b in zip(answer.token_logprobs, expected.token_logprobs, strict=True))
    pieces = []
    streamed = engine.run([requests[2]], on_text=pieces.append)[0].text
    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    stopped = generate(engine.loaded, engine.preprocess(requests[:1]), 4000,
                       {'do_sample': False, 'min_new_tokens': 4000}, cancels=[cancel],
                       graphs=graph_decoder('graphs', engine.loaded))
    shapes = engine.status()['cuda_graphs']
    prefill = engine.decoding.graphs.prefill is not None
    engine.unload()
    after = torch.cuda.memory_allocated()
    name = path.name
    return [check(f'{name}: auto decodes from CUDA graphs, as eager', engine.decoding.mode ==
                  'graphs' and prefill and same and
                  [a.text for a in single] == [a.text for a in answers],
                  f'{engine.decoding.mode}, prefill compiled: {prefill}, {captured} graphs at '
                  f'load, {shapes} after, '
                  f'warm-up {engine.decoding.warm_up_seconds:.2f} s'),
            check(f'{name}: graph log-probabilities as eager', gap < 1e-4, f'max diff {gap:.2e}'),
            check(f'{name}: graph stream concatenation', ''.join(pieces) == streamed),
            check(f'{name}: cancel stops graph decoding', stopped.cancelled == [True] and
                  len(stopped.tokens[0]) < 4000, f'{len(stopped.tokens[0])} tokens'),
            check(f'{name}: unload frees the graphs and caches', after <= before + 2**21,
                  f'{before} -> {after} bytes')]


def _check_graph_plans(path, requests) -> bool:
    """Plans under the grammar decoded from CUDA graphs: the static cache's plans."""
    plans = {}
    for mode in ('static', 'auto'):
        engine = _loaded_on_cuda(path, max_new_tokens=48, decode_mode=mode,
                                 constrain_plans='on', skills=('pick', 'place'))
        plans[mode] = ([(r.text, r.form) for r in engine.run(requests * 2)], engine.decoding.mode)
        engine.unload()
    return check(f'{path.name}: constrained plans from CUDA graphs as from the static cache',
                 plans['auto'][0] == plans['static'][0] and plans['auto'][1] == 'graphs',
                 f"{plans['auto'][1]}, forms {sorted({form for _, form in plans['auto'][0]})}")


def _same_tokens(path: str) -> int:
    """Greedy token ids of the default decoding (compiled prefill, graphs) against the others.

    bf16, 64 tokens, EOS allowed, four 640x480 frames one at a time and as one batch. The
    static cache runs the same attention over the same cache as the graphs; eager's dynamic
    cache attends without a mask, so near-ties of random weights may break otherwise.
    """
    frames = [np.random.default_rng(i).integers(0, 255, (480, 640, 3), np.uint8)
              for i in range(4)]
    requests = [Request('caption', frames[0]), Request('vqa', frames[1], 'what is on the table?'),
                Request('plan', frames[2], 'put the red block in the bin'),
                Request('plan', frames[3], 'pick up the cup')]
    engine = _loaded_on_cuda(path, dtype='bfloat16', max_new_tokens=64)
    runs = {}
    for mode, arguments in (('graphs', {}), ('static', {'cache_implementation': 'static',
                                                         'disable_compile': True}),
                            ('eager', {})):
        graphs = engine.decoding.graphs if mode == 'graphs' else None
        single = [generate(engine.loaded, engine.preprocess([r]), 64,
                           {'do_sample': False, **arguments}, graphs=graphs).tokens[0]
                  for r in requests]
        batch = generate(engine.loaded, engine.preprocess(requests), 64,
                         {'do_sample': False, **arguments}, graphs=graphs).tokens
        runs[mode] = (single, batch)
    engine.unload()
    results = []
    for other in ('static', 'eager'):
        for label, index in (('one at a time', 0), ('batch of 4', 1)):
            for number, (ours, theirs) in enumerate(zip(runs['graphs'][index],
                                                        runs[other][index], strict=True)):
                prefix = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False))
                               if a != b),
                              min(len(ours), len(theirs)))
                ok = check(f'graphs == {other}, {label}, request {number}', ours == theirs,
                           f'{len(ours)} vs {len(theirs)} tokens, the same first {prefix}')
                results.append(ok or other == 'eager')  # eager: reported, not required
    return 0 if all(results) else 1


def _check_exact_idefics3(images: list) -> list:
    """SmolVLM's processor on the GPU equals its PIL backend bit for bit, TF32 on and off."""
    results = []
    tf32 = torch.backends.cuda.matmul.allow_tf32
    sizes = [(480, 640), (720, 1280), (1080, 1920)]
    frames = [*images[:2], *(Image.fromarray(np.random.default_rng(h).integers(
        0, 256, (h, w, 3), np.uint8)) for h, w in sizes)]
    try:
        for allow in (False, True):
            torch.backends.cuda.matmul.allow_tf32 = allow
            for size in ({}, {'size': {'longest_edge': 768}}):
                reference = Idefics3ImageProcessorPil(**size)
                exact = ExactIdefics3(reference, 'cuda')
                for frame in frames:
                    want = reference([[frame]], return_tensors='pt')
                    got = exact([[frame]], return_tensors='pt')
                    equal = all(torch.equal(want[k], got[k].cpu()) for k in want)
                    results.append(check(
                        'idefics3: exact GPU preprocessing equals PIL', equal,
                        f'{frame.size} {size or "default size"} tf32={allow} '
                        f'{tuple(got["pixel_values"].shape)} on {got["pixel_values"].device}'))
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return results


def _check_prepared_beside_decoding(path, image: np.ndarray) -> bool:
    """Check a frame prepared on its own stream while a batch decodes: the CPU's inputs.

    prepare() (the node's look-ahead) queues its kernels beside the decoding steps; the frame
    cache then hands its outputs to the run that answers the frame.
    """
    engine = _loaded_on_cuda(path, decode_mode='eager')
    other = engine.preprocess([Request('caption', image[::-1].copy())])
    busy = threading.Thread(target=generate, args=(engine.loaded, other, 2000, {
        'do_sample': False, 'min_new_tokens': 2000}))
    busy.start()
    engine.prepare([image])
    during = busy.is_alive()
    busy.join()
    before = engine.status()['frames_reused']
    inputs = engine.preprocess([Request('caption', image)])
    reused = engine.status()['frames_reused'] - before
    on_cpu = build_inputs(engine.loaded.processor, [Image.fromarray(image)], ['x'], device='cpu')
    equal = torch.equal(inputs['pixel_values'].cpu(),
                        on_cpu['pixel_values'].to(inputs['pixel_values'].dtype))
    engine.unload()
    return check(f'{path.name}: frames prepared on their own stream beside decoding',
                 equal and reused == 1 and during,
                 f'prepared while decoding: {during}, reused {reused}')


def _check_gpu_preprocessing(family: str, processor, images: list) -> bool:
    """Where the processor can preprocess on the GPU, its inputs equal the CPU's (to 0.05).

    Idefics3's (exact_idefics3.py) must equal its CPU path exactly.
    """
    if isinstance(getattr(processor.image_processor, 'wrapped', None), ExactIdefics3):
        prompts = ['describe the scene'] * len(images)
        on_gpu = build_inputs(processor, images, prompts)
        on_cpu = build_inputs(processor, images, prompts, device='cpu')
        equal = set(on_gpu) == set(on_cpu) and all(
            torch.equal(on_gpu[k].cpu(), v) for k, v in on_cpu.items())
        return check(f"{family}: GPU preprocessing equals the CPU's exactly", equal,
                     f"on {on_gpu['pixel_values'].device}")
    kwargs = device_kwargs(processor, 'cuda', {})
    backend = getattr(processor.image_processor, 'backend', type(processor.image_processor))
    if not kwargs:
        return check(f'{family}: preprocessing stays on the CPU', True, f'backend {backend}')
    prompts = ['describe the scene'] * len(images)
    on_gpu = build_inputs(processor, images, prompts, **kwargs)
    on_cpu = build_inputs(processor, images, prompts)
    devices = {str(v.device) for v in on_gpu.values() if isinstance(v, torch.Tensor)}
    diffs = {name: float((on_gpu[name].cpu().float() - value.float()).abs().max())
             for name, value in on_cpu.items() if isinstance(value, torch.Tensor)}
    # Interpolation on the GPU rounds differently from the CPU's: measured up to 0.015, one grey
    # level in normalised units (1 / 255 / 0.26); more than 3 grey levels would be a real change.
    ok = set(on_gpu) == set(on_cpu) and max(diffs.values()) <= 0.05
    return check(f"{family}: GPU preprocessing equals the CPU's", ok,
                 f'backend {backend}, on {sorted(devices)}, max diff {diffs}')


def main(argv=None) -> int:
    """Run every check; 1 when one fails.

    ``--preprocessing``: the exact preprocessing alone; ``--graphs``: the graph families'
    checks alone; ``--same-tokens MODEL``: graph against eager tokens on MODEL.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv == ['--preprocessing']:
        return 0 if all(_check_exact_idefics3([])) else 1
    if len(argv) == 2 and argv[0] == '--same-tokens':
        return _same_tokens(argv[1])
    results = []
    device = resolve_device('auto')
    results.append(check('auto device is cuda', device.type == 'cuda', str(device)))
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    dtype = resolve_dtype('auto', device)
    results.append(check('auto dtype is bf16 where supported, else fp16', dtype == expected,
                         f'{dtype} on {torch.cuda.get_device_name(device)}'))
    images = [np.random.default_rng(i).integers(0, 255, (480, 640, 3), np.uint8)
              for i in range(3)]
    requests = [Request('caption', images[0]), Request('vqa', images[1], 'what is it?'),
                Request('plan', images[2], 'pick up the red block')]
    # cuBLAS allocates its workspace (~34 MiB) through the caching allocator on first use and
    # keeps it: make that happen before the memory baseline, so unload() is judged on the model.
    warm = torch.randn(64, 64, device=device)
    (warm @ warm).sum().item()
    with torch.cuda.stream(side_stream(device, 'capture')):  # the graphs' stream keeps one too
        (warm @ warm).sum().item()
    only_graphs = argv == ['--graphs']
    if not only_graphs:
        results.extend(_check_exact_idefics3([Image.fromarray(image) for image in images]))
    compiled = []  # checked after the memory checks: compiling allocates for the whole process
    families = GRAPHED if only_graphs else tuple(FAMILIES)
    with tempfile.TemporaryDirectory() as scratch:
        for family in families:
            path = build_tiny(family, f'{scratch}/{family}')
            before = torch.cuda.memory_allocated()
            engine = _loaded_on_cuda(path, decode_mode='eager')
            loaded = torch.cuda.memory_allocated()
            try:
                results.append(_check_gpu_preprocessing(family, engine.loaded.processor, images))
            except Exception as exc:  # noqa: BLE001 - a failed check, not the end of the run
                results.append(check(f'{family}: GPU preprocessing', False, repr(exc)[:300]))
            answers = engine.run(requests)
            batched = [r.text for r in answers]
            single = [engine.run([r])[0].text for r in requests]
            results.append(check(f'{family}: batched == single on cuda', batched == single))
            pieces = []
            streamed = engine.run([requests[2]], on_text=pieces.append)[0].text
            results.append(check(f'{family}: stream concatenation', ''.join(pieces) == streamed))
            engine.unload()
            after = torch.cuda.memory_allocated()
            # The first model on a fresh CUDA context keeps about 1 MiB of one-time allocations,
            # and the torchvision backend its normalisation constants (1 KiB): not the model.
            results.append(check(f'{family}: unload frees memory', after <= before + 2**21,
                                 f'{before} -> {loaded} -> {after} bytes'))
            if family in GRAPHED:
                results.extend(_check_graphs(path, requests, answers))
                results.append(_check_graph_plans(path, [r for r in requests
                                                         if r.task == 'plan']))
            if family in ('llava', 'florence2') and not only_graphs:
                compiled.append((path, batched))
            if family == 'idefics3' and not only_graphs:  # after the memory checks: its
                prepared = path  # thread and stream get a cuBLAS workspace of their own
        for path, batched in compiled:
            results.append(_check_compiled(path, requests, batched))
        if not only_graphs:
            results.append(_check_prepared_beside_decoding(prepared, images[0]))
    try:
        torch.empty(1 << 45, dtype=torch.uint8, device='cuda')  # 32 TiB: more than any card
        results.append(check('cuda OOM raised', False))
    except Exception as exc:  # noqa: BLE001 - the point is which kind it maps to
        kind = classify_error(exc)
        results.append(check('cuda OOM maps to out_of_memory', kind == 'out_of_memory',
                             type(exc).__name__))
    return 0 if all(results) else 1


if __name__ == '__main__':
    sys.exit(main())
