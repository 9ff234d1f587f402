"""The vision encoder's time inside a model's first forward, for vlm_benchmark's tables."""

import time


class VisionTimer:
    """Time the vision encoder inside the first forward, and that forward's end.

    The vision encoder: before its first layer, after its last; the layers are the ModuleList
    elements under a module named like 'vision' or 'visual' (Qwen2-VL's). ``prefilled``: when the
    model's first forward (the prefill; an encoder-decoder's first decoder step) returned, so
    the time to first token splits into ... + prefill + first token (logits processing,
    sampling, the streamer). On a GPU each mark synchronizes, so the marks are exact and the
    run slightly slower.
    """

    def __init__(self, model, device):
        import torch

        layers = vision_layers(model)
        self._sync = (lambda: torch.cuda.synchronize(device)) if device.type == 'cuda' \
            else (lambda: None)
        self.start = self.end = self.prefilled = None
        self._handles = [layers[0].register_forward_pre_hook(self._mark_start),
                         layers[-1].register_forward_hook(self._mark_end)] if layers else []
        self._handles.append(model.register_forward_hook(self._mark_prefilled))

    def _mark_start(self, *args) -> None:
        if self.start is None:
            self._sync()
            self.start = time.perf_counter()

    def _mark_end(self, *args) -> None:
        self._sync()
        self.end = time.perf_counter()  # the last call: encoders may run per tile

    def _mark_prefilled(self, *args) -> None:
        if self.prefilled is None:
            self._sync()
            self.prefilled = time.perf_counter()

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self._handles:
            handle.remove()


def vision_layers(model) -> list:
    """Return the vision encoder's layers: ModuleList elements under 'vision' or 'visual'."""
    import torch

    return [layer for name, module in model.named_modules()
            if ('vision' in name or 'visual' in name) and isinstance(module, torch.nn.ModuleList)
            for layer in module]
