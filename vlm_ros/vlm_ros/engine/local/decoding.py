"""How generate decodes (the decode_mode), and the warm-up that compiles before the first request.

Eager decoding grows a dynamic KV cache and launches every kernel from Python at each step: on a
GPU that overhead, not the arithmetic, sets the time per token of a ~2 B model. A static cache
has fixed shapes, so transformers can compile the decoding step with torch.compile; the first
generate of a new shape then compiles for seconds. The warm-up pays that during configure:
generates that change prompt length, token limit and batch size (batch 1 is compiled apart),
after which torch.compile has marked those dimensions dynamic, and later requests of any
length and batch size reuse the graphs (test_decoding.py counts them).
"""

import time
from collections.abc import Callable

import numpy as np

from ..config import DECODE_MODES
from ..errors import VlmError
from ..results import Request
from .generate import generate

WARM_UP_PROMPTS = ('x', 'a longer warm-up instruction, so that the prompt length changes too')


def resolve(mode: str, device) -> str:
    """Return the mode generate runs with: 'auto' is 'compiled' on CUDA, else 'eager'."""
    if mode not in DECODE_MODES:
        raise VlmError('bad_input', f'decode_mode must be one of {", ".join(DECODE_MODES)}; '
                       f'got {mode!r}')
    if mode == 'auto':
        return 'compiled' if device.type == 'cuda' else 'eager'
    return mode


def generate_kwargs(mode: str) -> dict:
    """Keyword arguments of model.generate for a resolved mode.

    transformers compiles by itself only on accelerators; 'compiled' asks for it on every
    device (on a CPU it is slower to start and mostly useful to test the path).
    """
    if mode == 'eager':
        return {}
    if mode == 'static':
        return {'cache_implementation': 'static', 'disable_compile': True}
    from transformers import CompileConfig

    compile_config = CompileConfig()
    compile_config._compile_all_devices = True  # documented as the switch for non-GPU devices
    return {'cache_implementation': 'static', 'compile_config': compile_config}


def compiled_graphs() -> int:
    """Count the graphs torch.compile has made in this process (a recompile adds one)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # a torch without dynamo compiles nothing
        return 0
    return int(counters['stats']['unique_graphs'])


def needs_warm_up(mode: str, device) -> bool:
    """Warm up what would otherwise make the first request slow: compilation, or CUDA start-up."""
    return mode == 'compiled' or device.type == 'cuda'


def warm_up_batches(max_image_side: int) -> list:
    """Return the (images, prompts, new tokens) of each warm-up generate, on a grey frame.

    From one to the next, every dimension a request can change does change (prompt length,
    cache length, batch size), so torch.compile marks each of them dynamic.
    """
    side = max_image_side or 640
    frame = np.full((side * 3 // 4, side, 3), 128, dtype=np.uint8)
    short, longer = WARM_UP_PROMPTS
    return [([frame], [short], 4), ([frame], [longer], 6), ([frame] * 2, [short, longer], 8),
            ([frame] * 3, [longer, short, longer], 5)]


def warm_up(loaded, preprocess: Callable, decode: dict, max_image_side: int) -> None:
    """Generate the warm-up batches greedily, each to its full length, as requests generate.

    ``preprocess`` is the engine's (VlmEngine.preprocess), so the warm-up sees the same inputs
    as a request; ``decode`` is the decode mode's arguments of generate.
    """
    for images, prompts, tokens in warm_up_batches(max_image_side):
        requests = [Request('plan', image, prompt)
                    for image, prompt in zip(images, prompts, strict=True)]
        generate(loaded, preprocess(requests), tokens,
                 {'do_sample': False, 'min_new_tokens': tokens, **decode})


def warm_up_if_needed(loaded, preprocess: Callable, mode: str, decode: dict, config) -> float:
    """Warm up where the mode needs it (needs_warm_up); return the seconds it took.

    A failed warm-up raises VlmError('load_failed') with the way out (decode_mode 'eager').
    """
    if not needs_warm_up(mode, loaded.device):
        return 0.0
    start = time.perf_counter()
    try:
        warm_up(loaded, preprocess, decode, config.max_image_side)
    except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for torch.compile
        raise VlmError('load_failed', f'the {mode} decode mode failed to warm up '
                       f'({type(exc).__name__}: {str(exc)[:300]}); set decode_mode to '
                       "'eager'", config.model, str(loaded.device), exc) from exc
    return time.perf_counter() - start
