"""Plain configuration of the engine: what to load, where, and how to decode."""

from dataclasses import dataclass, field
from typing import Optional

DEVICES_HELP = "'auto', 'cpu', 'cuda' or 'cuda:N'"
DTYPES = ('auto', 'float32', 'bfloat16', 'float16')


@dataclass
class EngineConfig:
    """Everything the engine needs to load a model and answer requests.

    ``model`` is a Hugging Face hub id or a local directory written by ``save_pretrained``.
    Greedy decoding is the default because a robot should get the same plan for the same
    image and instruction; sampling is used only when ``do_sample`` is set.
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
