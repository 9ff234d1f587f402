"""Features (engine/features.py) from the prefill that generate runs anyway.

The first forward of generate (vision encoder, then the whole prompt) is asked for its hidden
states, and only that one: a hook on the model sets output_hidden_states on its first call,
pools what the rows asked for and removes itself there, so decoding steps, compiled or
graphed, are not changed. Each row's states are pooled over its own prompt tokens (attention
mask), so padding in a batch changes nothing.
"""

import contextlib
from typing import Optional

import numpy as np
import torch

from ..features import Features, FeatureSpec, layer_problem


@contextlib.contextmanager
def prefill_states(model, specs: Optional[list], fallback_mask: torch.Tensor,
                   is_encoder_decoder: bool = False):
    """Yield a dict that holds, after the first forward, each row's Features ('features').

    They are pooled from the hidden states of the prompt as soon as the forward returns, so
    the states of every layer are not kept while the answer is decoded. The mask pooled over
    is the (batch, length) attention mask the forward was given, else fallback_mask (the
    prompt's). An encoder-decoder's states are its encoder's (where image and text are fused;
    generate runs the encoder on its own, before the first forward). Where no row's spec
    (specs: one FeatureSpec or None per row) asks for features nothing is hooked.
    """
    captured = {}
    if not wanted(specs):
        yield captured
        return
    module = model.get_encoder() if is_encoder_decoder else model

    def ask(module, args, kwargs):
        kwargs['output_hidden_states'] = True
        mask = kwargs.get('attention_mask')
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:  # not a static cache's 4D one
            captured['mask'] = mask
        return args, kwargs

    def take(module, args, kwargs, output):
        remove()
        captured['features'] = pool(output.hidden_states,
                                    captured.get('mask', fallback_mask), specs)

    handles = [module.register_forward_pre_hook(ask, with_kwargs=True),
               module.register_forward_hook(take, with_kwargs=True)]

    def remove():
        for handle in handles:
            handle.remove()
    try:
        yield captured
    finally:
        remove()


def pool(states: tuple, attention_mask: Optional[torch.Tensor], specs: list) -> list:
    """Return each row's Features (None where its spec is None) from the prefill's states.

    ``attention_mask`` is the one the states were made under (batch, length); without one,
    every position counts. States longer than the mask (image tokens an encoder put ahead of
    the text) count the extra leading positions as prompt.
    """
    return [None if spec is None else _row(states, attention_mask, row, spec, len(states))
            for row, spec in enumerate(specs)]


def _row(states: tuple, attention_mask: Optional[torch.Tensor], row: int, spec: FeatureSpec,
         layers: int) -> Features:
    problem = layer_problem(spec.layer, layers)
    if problem:
        return Features(np.zeros(0, dtype=np.float32), spec.layer, layers, spec.pooling, 0,
                        problem)
    index = spec.layer % layers
    state = states[index][row]
    mask = torch.ones(state.shape[0], dtype=torch.bool, device=state.device) \
        if attention_mask is None else attention_mask[row].to(state.device).bool()
    extra = state.shape[0] - mask.shape[0]
    if extra > 0:
        mask = torch.cat([torch.ones(extra, dtype=torch.bool, device=state.device), mask])
    kept = state[mask[-state.shape[0]:]].float()
    data = {'last': lambda: kept[-1], 'mean': lambda: kept.mean(dim=0),
            'tokens': lambda: kept}[spec.pooling]()
    return Features(data.cpu().numpy(), index, layers, spec.pooling, int(kept.shape[0]))


def wanted(specs: Optional[list]) -> bool:
    """Tell whether any row of a batch asks for features."""
    return bool(specs) and any(spec is not None for spec in specs)
