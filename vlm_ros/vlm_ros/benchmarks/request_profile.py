"""Where one request's time goes, by operator: torch.profiler around one batch-1 request.

The engine benchmark's tables split the time to first token into preprocessing, vision encoder
and prefill; this says which operators (and how much host time between them) make each part,
so the next optimisation starts from a measurement. Printed, never asserted.
"""

import numpy as np

from ..engine import Request


def profile_request(engine, new_tokens: int, image_hw: tuple, rows: int = 25) -> str:
    """Profile one plan request on a fresh frame; return two tables: host time, device time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ..engine.local.generate import generate

    loaded = engine.loaded
    frame = np.random.default_rng(new_tokens).integers(0, 255, (*image_hw, 3), np.uint8)
    activities = [ProfilerActivity.CPU]
    if loaded.device.type == 'cuda':
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        inputs = engine.preprocess([Request('plan', frame, 'pick up the red block')])
        generate(loaded, inputs, new_tokens,
                 {**engine.generate_kwargs(), 'min_new_tokens': new_tokens},
                 graphs=engine.decoding.graphs)
        if loaded.device.type == 'cuda':
            torch.cuda.synchronize(loaded.device)
    averages = prof.key_averages()
    tables = [f'### profile of one request, batch 1, {new_tokens} tokens, host time\n',
              averages.table(sort_by='self_cpu_time_total', row_limit=rows)]
    if loaded.device.type == 'cuda':
        tables += ['\n### the same request, device time\n',
                   averages.table(sort_by='self_cuda_time_total', row_limit=rows)]
    return ''.join(tables)
