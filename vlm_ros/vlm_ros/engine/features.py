"""The VLM's own representation of image and instruction, for action heads (a VLA's input).

A VLA puts an action head on the VLM's fused representation: the hidden states of the prompt
(image tokens and instruction) at one layer of the language model, read once the prefill has
run. A Request asks for them with a FeatureSpec; its Result then carries Features taken from
the same prefill that made its answer, so they cost no second forward pass. No torch here:
the local backend fills them (local/hidden_features.py); the remote backend cannot.
"""

from dataclasses import dataclass

import numpy as np

from .errors import VlmError

# last: the prompt's last token (what a decoder's next token reads); mean: the mean over the
# prompt's tokens; tokens: every prompt token's state (image tokens and instruction).
POOLINGS = ('last', 'mean', 'tokens')


@dataclass(frozen=True)
class FeatureSpec:
    """Which hidden states a request wants: a layer and how its tokens are pooled.

    ``layer`` indexes the model's hidden states as transformers counts them: 0 is the input
    embeddings (image features merged in), 1 the first layer's output, -1 the last layer's
    (after the final norm, what the language-model head reads). An encoder-decoder model
    (Florence-2) fuses image and text in its encoder: its encoder's states are taken.
    """

    layer: int = -1
    pooling: str = 'last'

    def __post_init__(self):
        """Refuse a pooling that is not one of POOLINGS, or a layer that is not an integer."""
        if self.pooling not in POOLINGS:
            raise VlmError('bad_input', f'feature pooling must be one of {", ".join(POOLINGS)}; '
                           f'got {str(self.pooling)[:40]!r}')
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise VlmError('bad_input', f'feature layer must be an integer; got {self.layer!r}')


@dataclass(frozen=True)
class Features:
    """Hidden states of one request's prompt: float32, (hidden,) or (tokens, hidden).

    ``layer`` is the absolute index taken (a negative spec counted from the end), ``layers``
    how many hidden states the model has (layer 0 to layers - 1), ``tokens`` the prompt tokens
    pooled. ``problem`` says why ``data`` is empty (a layer the model does not have): the
    request's answer is made all the same.
    """

    data: np.ndarray
    layer: int
    layers: int
    pooling: str
    tokens: int
    problem: str = ''


def layer_problem(layer: int, layers: int) -> str:
    """Say why layer is not one of ``layers`` hidden states, naming the range ('': it is)."""
    if -layers <= layer < layers:
        return ''
    return (f"feature layer {layer} is not one of this model's hidden states: 0 (embeddings) "
            f'to {layers - 1} (the last layer), or {-layers} to -1 counted from the end')
