"""How generate decodes (the decode_mode), and the warm-up that compiles before the first request.

Eager decoding grows a dynamic KV cache and launches every kernel from Python at each step: on a
GPU that overhead, not the arithmetic, sets the time per token of a ~2 B model. A static cache
has fixed shapes, so transformers can compile the decoding step with torch.compile; the first
generate of a new shape then compiles for seconds. The warm-up pays that during configure:
generates that change prompt length, token limit and batch size (batch 1 is compiled apart),
after which torch.compile has marked those dimensions dynamic, and later requests of any
length and batch size reuse the graphs (test_decoding.py counts them).

'graphs' (auto's choice on CUDA for the families graph_decode.py takes) replays greedy
decoding steps from CUDA graphs with no host round trip per token (a plan grammar reads each
step's tokens to mask the next); sampled requests decode with the static cache, uncompiled.
Its warm-up compiles the step and captures the graphs of the warm-up's shapes.
"""

import time
from collections.abc import Callable

import numpy as np

from ..config import DECODE_MODES
from ..errors import VlmError
from ..results import Request
from .generate import eos_token_ids, generate
from .graph_decode import FAMILIES, GraphDecoder, family_supported

WARM_UP_PROMPTS = ('x', 'a longer warm-up instruction, so that the prompt length changes too')


def resolve(mode: str, device, model) -> str:
    """Return the mode generate runs with.

    'auto' is 'graphs' on CUDA where the family allows it, else 'compiled'; 'eager' elsewhere.
    """
    if mode not in DECODE_MODES:
        raise VlmError('bad_input', f'decode_mode must be one of {", ".join(DECODE_MODES)}; '
                       f'got {mode!r}')
    if mode == 'graphs' and not family_supported(model):
        raise VlmError('bad_input', f"decode_mode 'graphs' decodes the families "
                       f"{', '.join(FAMILIES)} with their default generation settings; this "
                       f"model is {model.config.model_type!r}: use 'auto' or 'compiled'")
    if mode == 'auto':
        if device.type != 'cuda':
            return 'eager'
        return 'graphs' if family_supported(model) else 'compiled'
    return mode


def graph_decoder(mode: str, loaded):
    """Make the 'graphs' mode's GraphDecoder (None for the others), its step compiled on CUDA.

    On a CPU compiling buys nothing (see decode modes in docs/BENCHMARKS.md) and costs seconds.
    """
    if mode != 'graphs':
        return None
    return GraphDecoder(loaded.model, eos_token_ids(loaded.model, loaded.processor.tokenizer),
                        compiled=loaded.device.type == 'cuda')


def generate_kwargs(mode: str) -> dict:
    """Keyword arguments of model.generate for a resolved mode.

    transformers compiles by itself only on accelerators; 'compiled' asks for it on every
    device (on a CPU it is slower to start and mostly useful to test the path).
    """
    if mode == 'eager':
        return {}
    if mode in ('static', 'graphs'):
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
    return mode in ('compiled', 'graphs') or device.type == 'cuda'


def warm_up_batches(max_image_side: int, heads: int | None = None) -> list:
    """Return the (images, prompts, new tokens) of each warm-up generate, on a grey frame.

    From one to the next, every dimension a request can change does change (prompt length,
    cache length, batch size), so torch.compile marks each of them dynamic. The first batch of
    several rows is not as large as the decoder has KV heads (``heads``, kv_heads): at that
    size torch.compile ties the batch to the static cache's heads dimension and compiles a
    prefill only that batch size uses, before the dynamic one (seconds of configure; the tiny
    Idefics3 of test_graph_decoding.py, two KV heads: 5 graphs with batch 2 first, 4 with 3).
    """
    side = max_image_side or 640
    frame = np.full((side * 3 // 4, side, 3), 128, dtype=np.uint8)
    short, longer = WARM_UP_PROMPTS
    several = [([frame] * 2, [short, longer], 8), ([frame] * 3, [longer, short, longer], 5)]
    if heads == len(several[0][0]):
        several.reverse()
    return [([frame], [short], 4), ([frame], [longer], 6), *several]


def kv_heads(model) -> int | None:
    """Return the decoder's KV-head count (the static cache's second dimension), if it says."""
    return getattr(model.config.get_text_config(), 'num_key_value_heads', None)


def warm_up(loaded, preprocess: Callable, decode: dict, max_image_side: int,
            graphs=None) -> None:
    """Generate the warm-up batches greedily, each to its full length, as requests generate.

    ``preprocess`` is the engine's (VlmEngine.preprocess), so the warm-up sees the same inputs
    as a request; ``decode`` is the decode mode's arguments of generate.
    """
    for images, prompts, tokens in warm_up_batches(max_image_side, kv_heads(loaded.model)):
        requests = [Request('plan', image, prompt)
                    for image, prompt in zip(images, prompts, strict=True)]
        generate(loaded, preprocess(requests), tokens,
                 {'do_sample': False, 'min_new_tokens': tokens, **decode}, graphs=graphs)


def warm_up_if_needed(loaded, preprocess: Callable, mode: str, decode: dict, config,
                      graphs=None) -> float:
    """Warm up where the mode needs it (needs_warm_up); return the seconds it took.

    A failed warm-up raises VlmError('load_failed') with the way out (decode_mode 'eager').
    """
    if not needs_warm_up(mode, loaded.device):
        return 0.0
    start = time.perf_counter()
    try:
        warm_up(loaded, preprocess, decode, config.max_image_side, graphs)
    except Exception as exc:  # noqa: BLE001 - e.g. no C++ compiler for torch.compile
        raise VlmError('load_failed', f'the {mode} decode mode failed to warm up '
                       f'({type(exc).__name__}: {str(exc)[:300]}); set decode_mode to '
                       "'eager'", config.model, str(loaded.device), exc) from exc
    return time.perf_counter() - start


class Decoding:
    """How a loaded model decodes: the resolved mode, generate's arguments, the GraphDecoder."""

    def __init__(self):
        self.mode, self.arguments, self.graphs, self.warm_up_seconds = 'eager', {}, None, 0.0

    def prepare(self, loaded, preprocess: Callable, config) -> None:
        """Resolve config.decode_mode for this model and warm it up (VlmError when it fails)."""
        self.mode = resolve(config.decode_mode, loaded.device, loaded.model)
        self.arguments = generate_kwargs(self.mode)
        self.graphs = graph_decoder(self.mode, loaded)
        self.warm_up_seconds = warm_up_if_needed(loaded, preprocess, self.mode, self.arguments,
                                                 config, self.graphs)

    def status(self) -> dict:
        """Plain values for diagnostics: the mode, its warm-up, the graphs made."""
        return {'decode_mode': self.mode, 'warm_up_s': f'{self.warm_up_seconds:.2f}',
                'compiled_graphs': compiled_graphs(),
                'cuda_graphs': getattr(self.graphs, 'captures', 0)}

    def close(self) -> None:
        """Drop the graphs and their caches (at unload)."""
        if self.graphs is not None:
            self.graphs.close()
        self.graphs = None
