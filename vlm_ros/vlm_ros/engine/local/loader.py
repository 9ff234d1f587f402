"""Load a VLM and its processor from a hub id or a local ``save_pretrained`` directory.

One loader serves real models and the tests' tiny checkpoints, so the tests exercise the path
a robot uses. Failures become ``VlmError`` naming the model, the device and the cause.
"""

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Optional

import torch
import transformers
from huggingface_hub import constants as hub_constants
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..config import DEVICES_HELP, DTYPES, EngineConfig
from ..errors import VlmError
from .processors import load_processor

# Tried in order: decoder-only and cross-attention families map to ImageTextToText; some
# encoder-decoder families are registered only as Vision2Seq or Seq2SeqLM.
_AUTO_CLASSES = ('AutoModelForImageTextToText', 'AutoModelForVision2Seq', 'AutoModelForSeq2SeqLM')
HUB_PROBE_TIMEOUT = 5.0  # s for one HEAD request to the hub before a download
_DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}
# torch's CPU threads when this process started (OMP_NUM_THREADS, else one per core): what
# cpu_threads 0 gives back, so a load after one with a cap is not left capped.
STARTING_THREADS = torch.get_num_threads()


@dataclass
class LoadedModel:
    """A model ready for ``generate``, with what the engine needs to know about it."""

    model: object
    processor: object
    device: torch.device
    dtype: torch.dtype
    name: str
    # torch's CPU threads, as set at load: what threads started since compute with. Asked
    # in another thread, torch answers that thread's own count, fixed at its first call.
    cpu_threads: int = 0

    @property
    def dtype_name(self) -> str:
        """Name the weights' dtype as --dtype spells it ('bfloat16'): what the tools report."""
        return str(self.dtype).replace('torch.', '')

    @property
    def is_encoder_decoder(self) -> bool:
        """Tell whether generate returns only new tokens (encoder-decoder) or prompt + new."""
        return bool(getattr(self.model.config, 'is_encoder_decoder', False))


def resolve_device(device: str) -> torch.device:
    """Turn 'auto'/'cpu'/'cuda[:N]' into a torch device, failing early when CUDA is absent."""
    if device == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if device != 'cpu' and not device.startswith('cuda'):
        raise VlmError('bad_input', f'unknown device {device!r}; use {DEVICES_HELP}')
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise VlmError('bad_input', f'unknown device {device!r}; use {DEVICES_HELP}') from exc
    if resolved.type == 'cuda':
        if not torch.cuda.is_available():
            raise VlmError('bad_input', f'device {device!r} asked for, but CUDA is not available'
                           ' (no GPU, or a CPU-only torch build)')
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise VlmError('bad_input', f'device {device!r} asked for, but only '
                           f'{torch.cuda.device_count()} CUDA device(s) exist')
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """Pick the weights' dtype: 'auto' is bfloat16 on GPUs that support it, else float32."""
    if dtype not in DTYPES:
        raise VlmError('bad_input', f'unknown dtype {dtype!r}; use one of {DTYPES}')
    if dtype != 'auto':
        return _DTYPES[dtype]
    if device.type == 'cuda' and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if device.type == 'cuda' else torch.float32


def classify_error(exc: BaseException) -> str:
    """Map an exception from loading or generating to a VlmError kind."""
    if isinstance(exc, torch.OutOfMemoryError) or 'out of memory' in str(exc).lower():
        return 'out_of_memory'
    if isinstance(exc, OSError):  # FileNotFoundError, hub 'not a valid model identifier'
        return 'not_found'
    if isinstance(exc, (KeyError, ValueError)) and (
            'model_type' in str(exc) or 'Unrecognized' in str(exc) or 'does not recognize'
            in str(exc) or 'not supported' in str(exc)):
        return 'unsupported'
    return 'load_failed'


def model_failure(action: str, exc: BaseException, model: str, device) -> VlmError:
    """Make the VlmError of a model that failed to run: 'out_of_memory' or 'generation_failed'."""
    kind = 'out_of_memory' if classify_error(exc) == 'out_of_memory' else 'generation_failed'
    return VlmError(kind, f'{action} failed: {exc}', model, str(device), exc)


def _kwargs(config: EngineConfig, device: torch.device, dtype: torch.dtype) -> dict:
    kwargs = {'dtype': dtype, 'trust_remote_code': config.trust_remote_code,
              'local_files_only': config.local_files_only}
    if config.attn_implementation:
        kwargs['attn_implementation'] = config.attn_implementation
    if device.type == 'cuda':
        kwargs['device_map'] = {'': device}
    return kwargs


def _load_model(source: str, kwargs: dict):
    """Try the Auto classes in order; remember why each refused the config."""
    refusals = []
    for name in _AUTO_CLASSES:
        auto = getattr(transformers, name, None)
        if auto is None:
            continue
        try:
            return auto.from_pretrained(source, **kwargs)
        except ValueError as exc:
            if 'Unrecognized configuration class' not in str(exc):
                raise
            refusals.append(f'{name}: {str(exc).splitlines()[0]}')
    raise ValueError('architecture not supported by the installed transformers '
                     f'{transformers.__version__}: ' + '; '.join(refusals))


def _looks_like_path(name: str) -> bool:
    """Tell a local path from a hub id: hub ids are NAME or ORG/NAME, never more or rooted."""
    return name.startswith(('/', '.', '~')) or name.endswith('/') or name.count('/') > 1 \
        or '\\' in name


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> Optional[str]:
    """Return None when the hub's endpoint answers HTTP, else why not (one short try).

    huggingface_hub retries a refused or unresolvable connection for minutes; a robot without
    network should hear at once that the model is neither cached nor downloadable.
    """
    try:
        urllib.request.urlopen(urllib.request.Request(hub_constants.ENDPOINT, method='HEAD'),
                               timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return str(getattr(exc, 'reason', exc))
    return None


def locate(config: EngineConfig) -> str:
    """Return what from_pretrained should load: a local directory or a hub id, or VlmError.

    An existing directory wins; a name shaped like a path that does not exist fails at once
    (not_found); anything else is a hub id (ORG/NAME), loaded from the Hugging Face cache
    (HF_HOME) or downloaded. Offline (HF_HUB_OFFLINE=1 or local_files_only) with nothing
    cached, or online with the hub unreachable, fails at once saying how to get the model.
    """
    name = config.model
    if os.path.isdir(os.path.expanduser(name)):
        return os.path.expanduser(name)
    if _looks_like_path(name):
        what = 'is a file, not a checkpoint folder' if os.path.exists(
            os.path.expanduser(name)) else 'does not exist'
        raise VlmError('not_found', f'model directory {name!r} {what}', name, config.device)
    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        raise VlmError('not_found', f'{name!r} is neither a directory nor a hub id (ORG/NAME): '
                       f'{exc}', name, config.device) from exc
    if isinstance(try_to_load_from_cache(name, 'config.json'), str):
        return name
    # ORG/NAME is also a relative path (demo_out/tiny_model): say both readings, or a user who
    # meant a directory reads only about a hub cache.
    neither = (f'model {name!r} is neither an existing directory (no '
               f'{os.path.abspath(os.path.expanduser(name))}) nor a hub id in the local cache '
               f'({hub_constants.HF_HUB_CACHE})')
    get = (f'give a save_pretrained directory, or download the hub model once where the hub is '
           f'reachable (`hf download {name}`)')
    if config.local_files_only or hub_constants.HF_HUB_OFFLINE:
        why = 'local_files_only is set' if config.local_files_only else 'HF_HUB_OFFLINE is set'
        raise VlmError('not_found', f'{neither}, and {why}; ' + get, name, config.device)
    unreachable = _hub_reachable()
    if unreachable is not None:
        raise VlmError('not_found', f'{neither}, and {hub_constants.ENDPOINT} cannot be '
                       f'reached ({unreachable}); ' + get, name, config.device)
    return name


def set_cpu_threads(threads: int) -> int:
    """Have torch compute on the CPU with ``threads`` threads (0: as the process started).

    Return the count. torch keeps it for the process, and each thread takes it at its first
    torch call: this one, and the threads made after the load (the node's worker threads,
    made at activate), compute with it. It matters on a CPU robot: a real-size model answers
    faster on more cores, but every one it takes is taken from the robot's other processes
    (docs/BENCHMARKS.md, CPU threads).
    """
    if threads < 0:
        raise VlmError('bad_input', f'cpu_threads must be 0 (as torch starts) or more; got '
                       f'{threads}')
    count = threads or STARTING_THREADS
    torch.set_num_threads(count)
    return count


def load(config: EngineConfig) -> LoadedModel:
    """Load model and processor onto the configured device, in eval mode."""
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    threads = set_cpu_threads(config.cpu_threads)
    source = locate(config)
    if not config.trust_remote_code and _has_own_code(source):  # before transformers' warnings
        raise _untrusted(source, config, device)
    try:
        processor = load_processor(source, trust_remote_code=config.trust_remote_code,
                                   local_files_only=config.local_files_only)
        model = _load_model(source, _kwargs(config, device, dtype))
        if device.type != 'cuda':
            model.to(device)
        model.eval()
    except Exception as exc:  # noqa: BLE001 - every loader failure becomes a VlmError
        if 'trust_remote_code=True' in str(exc):  # a processor's own code, say
            raise _untrusted(source, config, device) from exc
        kind = classify_error(exc)
        first_line = _http_404(exc) or (str(exc).strip().splitlines() or
                                        [type(exc).__name__])[0]
        raise VlmError(kind, f'cannot load the model: {kind.replace("_", " ")}: {first_line}',
                       config.model, str(device), exc) from exc
    return LoadedModel(model, processor, device, dtype, config.model, threads)


def _http_404(exc: BaseException) -> str:
    """Say which file the hub (or a mirror at HF_ENDPOINT) answered 404 for, if one did.

    transformers reports it as "We couldn't connect to ...", which sends a user to check the
    network when the model id (or the mirror) is what to check.
    """
    seen = 0
    while exc is not None and seen < 16:  # bounded: a cycle of causes ends too
        response = getattr(exc, 'response', None)
        if getattr(response, 'status_code', None) == 404:
            return (f'the hub answered HTTP 404 for {getattr(response, "url", "?")}: no such '
                    'model, or no such file in it (check the model id)')
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return ''


def _has_own_code(source: str) -> bool:
    """Tell whether source's config.json names classes of its own for a type transformers lacks.

    Such a repository loads only by running its Python code (auto_map); a local directory's or
    a cached hub model's config.json is read here, others are left to transformers.
    """
    path = os.path.join(source, 'config.json') if os.path.isdir(source) else \
        try_to_load_from_cache(source, 'config.json')
    try:
        with open(path, encoding='utf-8') as file:
            found = json.load(file)
    except (OSError, TypeError, ValueError):  # no file, no cached copy, not JSON
        return False
    return isinstance(found, dict) and 'auto_map' in found and \
        found.get('model_type') not in transformers.CONFIG_MAPPING


def _untrusted(source: str, config: EngineConfig, device) -> VlmError:
    return VlmError('unsupported', f'cannot load the model: {source} holds Python code of its '
                    'own (auto_map in its configuration), which runs only where it is trusted: '
                    "vlm_node's trust_remote_code:=true, the tools' --trust-remote-code; read "
                    'it first, as it runs with their rights', config.model, str(device))


def compute_status(loaded: LoadedModel) -> dict:
    """Return the CPU threads torch computes with, and on a GPU its CUDA memory in MiB."""
    threads, device = {'cpu_threads': loaded.cpu_threads}, loaded.device
    if device.type != 'cuda':
        return threads
    return {**threads,
            'gpu_memory_allocated_mib': round(torch.cuda.memory_allocated(device) / 2**20),
            'gpu_memory_reserved_mib': round(torch.cuda.memory_reserved(device) / 2**20)}


def unload(loaded: LoadedModel) -> None:
    """Drop the model's tensors and give cached GPU memory back to the driver."""
    on_cuda = loaded.device.type == 'cuda'
    loaded.model = None
    loaded.processor = None
    if on_cuda:
        torch.cuda.empty_cache()


def to_device(inputs, device, dtype):
    """Move a processor batch to device, casting floating tensors (pixels) to the model dtype."""
    inputs = inputs.to(device)
    for name, tensor in inputs.items():
        if tensor.is_floating_point():
            inputs[name] = tensor.to(dtype)
    return inputs
