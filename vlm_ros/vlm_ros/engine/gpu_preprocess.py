"""Resize, tile and normalise on the model's GPU where the image processor can do it faithfully.

transformers' torchvision backend (its default wherever torchvision is installed) takes a
``device`` argument and then runs resizing, tiling and normalisation as tensor operations on
that device; the PIL backend cannot. On a GPU this takes the preprocessing, a part of every
request's time to first token, off the CPU: only the frame's bytes cross to the GPU, not its
normalised float tiles (docs/BENCHMARKS.md measures both).

Not for processors that resize with Lanczos: torchvision has no Lanczos on CUDA and would fall
back to bicubic, feeding the model pixels it was not trained on. Idefics3/SmolVLM's instead
run on the GPU through local/exact_idefics3.py, equal to its PIL backend byte for byte.
``processor_kwargs`` ``{"device": "cuda"}`` asks for the GPU anyway, ``{"device": "cpu"}``
never.
"""

LANCZOS = 1  # PIL.Image.Resampling.LANCZOS, as image processors store their resample


def device_kwargs(processor, device: str, processor_kwargs: dict) -> dict:
    """Return {'device': device} when the processor can preprocess on that GPU, else {}."""
    if not device.startswith('cuda') or 'device' in processor_kwargs:
        return {}
    image_processor = getattr(processor, 'image_processor', None)
    image_processor = getattr(image_processor, 'wrapped', image_processor)  # FrameCache
    torchvision = getattr(image_processor, 'backend', None) == 'torchvision' or \
        type(image_processor).__name__.endswith('Fast')  # transformers 4: the *Fast classes
    resample = getattr(image_processor, 'resample', None)
    lanczos = resample == LANCZOS or 'LANCZOS' in str(resample).upper()
    return {'device': device} if torchvision and not lanczos else {}
