"""CUDA streams of the engine's own besides the default one, made once per device and use.

Graphs are captured on one (graph_decode.py), frames prepared ahead are preprocessed on another
(inputs.py). They are kept for the process, because cuBLAS keeps a workspace for each stream it
has run on: a new stream per capture or per frame would keep more memory after every unload.
"""

import functools

import torch


def side_stream(device, use: str) -> 'torch.cuda.Stream':
    """Return the stream for ``use`` ('capture', 'preprocessing') on ``device``'s GPU."""
    index = torch.device(device).index
    return _stream(torch.cuda.current_device() if index is None else index, use)


@functools.cache
def _stream(index: int, use: str) -> 'torch.cuda.Stream':
    return torch.cuda.Stream(index)
