"""The prompt's pass through the decoder, compiled: no recompiling as prompts and batches vary.

On an H200, SmolVLM-2B's eager prefill took 24 ms for one frame's 5 tiles (405 image
positions) and the prompt (docs/BENCHMARKS.md, 2026-12-04): some 1.5 TFLOP, 2 ms at the card's
bf16 rate. Like the eager decoding step, each layer launches dozens of small kernels from
Python. generate still runs the first forward (vision encoder, merging the image features in,
the first token's processors, the streamer); only its call of the decoder goes to a
torch.compile'd copy for that forward. Shapes are dynamic, so prompt length, batch size
(batch 1 is compiled apart) and static cache length change without a recompile; the warm-up
(decoding.py) compiles it in configure.

The per-layer cancel hooks of the first forward (generate.py) would be traced into the graph
and recompile it for every batch size: the compiled decoder is checked once, before it runs.
A request that asks for features (hidden_features.py) runs the decoder eagerly, since
output_hidden_states would compile a third graph. The engine runs one forward at a time, so
putting the compiled copy in the decoder's place for the duration of one is safe.
"""

import contextlib

import torch

# Inductor keeps eager's bf16/fp16 roundings between the operations it fuses (by default it
# skips them), so the compiled prefill and step pick the tokens eager decoding picks.
EAGER_ROUNDING = {'emulate_precision_casts': True}


class CompiledPrefill:
    """A model's decoder compiled with dynamic shapes, put in place for one forward at a time."""

    def __init__(self, model):
        self.decoder = model.get_decoder()
        self._parent, self._name = _parent_of(model, self.decoder)
        self.compiled = torch.compile(self.decoder, dynamic=True, options=EAGER_ROUNDING)
        self._inside = frozenset(id(module) for module in self.decoder.modules())

    def outside(self, modules: list) -> list:
        """Return those of ``modules`` that are not the decoder's (its layers run compiled)."""
        return [module for module in modules if id(module) not in self._inside]

    @contextlib.contextmanager
    def in_place(self):
        """Run the model's forwards inside with the compiled decoder in the eager one's place."""
        self._parent._modules[self._name] = self.compiled
        try:
            yield self.compiled
        finally:
            self._parent._modules[self._name] = self.decoder


def _parent_of(model, child) -> tuple:
    """Return (module, attribute) of the module that holds ``child`` (model.get_decoder())."""
    for module in model.modules():
        for name, candidate in module.named_children():
            if candidate is child:
                return module, name
    raise ValueError(f'{type(child).__name__} is not a submodule of {type(model).__name__}')
