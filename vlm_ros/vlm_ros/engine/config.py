"""Plain configuration of the engine: what to load, where, and how to decode."""

import json
from dataclasses import dataclass, field
from typing import Optional

from .errors import VlmError

DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')
# 'transformers' runs the model in this process; 'openai' asks an OpenAI-compatible server
# (vLLM, SGLang, TGI, Ollama, transformers serve) through its chat completions API.
BACKENDS = ('transformers', 'openai')
# How the in-process engine decodes: 'auto' = 'graphs' on CUDA (greedy steps replayed from
# CUDA graphs) where the family allows, else 'compiled'; 'eager' elsewhere; 'static' = a static
# KV cache without compilation (see engine/local/decoding.py).
DECODE_MODES = ('auto', 'eager', 'static', 'compiled', 'graphs')
# processor_kwargs come from anyone on the DDS domain: bounded before they are parsed.
MAX_KWARGS_CHARS = 4096
MAX_KWARGS_DEPTH = 8


def parse_processor_kwargs(text: str, name: str = 'processor_kwargs') -> dict:
    """Parse processor keyword arguments written as a JSON object, or raise VlmError.

    The node's parameter and the tools' --processor-kwargs option both go through this, so a
    value is accepted or refused alike everywhere; name says which one the error is about.
    """
    if len(text) > MAX_KWARGS_CHARS:
        raise VlmError('bad_input', f'{name} has {len(text)} characters; at most '
                       f'{MAX_KWARGS_CHARS}')
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or nested too deep
        raise VlmError('bad_input', f'{name} is not valid JSON ({exc}): {text[:200]!r}') \
            from exc
    if not isinstance(value, dict):
        raise VlmError('bad_input', f'{name} must be a JSON object like '
                       f'{{"do_image_splitting": false}}, got {text[:200]!r}')
    if _depth(value) > MAX_KWARGS_DEPTH:
        raise VlmError('bad_input', f'{name} nests deeper than {MAX_KWARGS_DEPTH} levels')
    return value


def _depth(value) -> int:
    """Nesting depth of a parsed JSON value (bounded: the text is at most MAX_KWARGS_CHARS)."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


@dataclass
class RemoteConfig:
    """How the 'openai' backend reaches its server; ignored by the 'transformers' backend.

    ``model`` is the name the server knows the model by ('' = EngineConfig.model, which is
    what vLLM and SGLang serve a hub id as). The API key is read from the environment variable
    named by ``api_key_env`` when the engine loads, so it is never a parameter, never in a
    launch file, and never in a log; '' means the server needs none. ``request_timeout`` bounds
    the wait for a connection and for each streamed data event (SSE comments do not count),
    not the whole answer, so a long
    answer that keeps streaming is never cut. Images go as JPEG: a 640x480 frame is 922 kB of
    raw RGB, and tens of kB at ``jpeg_quality`` 90 (10 kB for the benchmark's frame).
    """

    base_url: str = 'http://127.0.0.1:8000/v1'
    model: str = ''
    api_key_env: str = ''
    request_timeout: float = 30.0
    max_retries: int = 2
    max_concurrency: int = 4
    jpeg_quality: int = 90
    probe_period: float = 2.0  # s between reachability checks (GET {base_url}/models)


@dataclass
class EngineConfig:
    """Everything the engine needs to load a model and answer requests.

    ``model`` is a Hugging Face hub id or a local directory written by ``save_pretrained``.
    Greedy decoding is the default because a robot should get the same plan for the same
    image and instruction; sampling is used only when ``do_sample`` is set. ``backend`` picks
    where the model runs (see make_engine), and ``remote`` how to reach it on a server.
    """

    model: str
    device: str = 'auto'
    dtype: str = 'auto'
    attn_implementation: Optional[str] = None
    trust_remote_code: bool = False
    local_files_only: bool = False
    max_new_tokens: int = 64
    max_image_side: int = 640
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    prompts: dict = field(default_factory=dict)  # task -> template overrides
    processor_kwargs: dict = field(default_factory=dict)  # e.g. {'do_image_splitting': False}
    decode_mode: str = 'auto'  # one of DECODE_MODES
    # Threads torch computes with on the CPU, for the whole process (0 = as it started:
    # OMP_NUM_THREADS, else one per core); fewer leave cores to the robot's other processes.
    cpu_threads: int = 0
    # Plans written under a grammar of the plan schema (local/constrain.py): 'auto', 'on', 'off'.
    constrain_plans: str = 'auto'
    skills: tuple = ()  # the robot's skills, 'pick' or 'place(object, location)' (plan_schema)
    backend: str = 'transformers'
    remote: RemoteConfig = field(default_factory=RemoteConfig)
