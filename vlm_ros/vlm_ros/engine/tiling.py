"""No upscaling before tiling: give a tiling processor the size the frame needs, not more.

Idefics3/SmolVLM processors resize every image to one longest edge (SmolVLM: 1536 px) and cut
it into tiles of the vision encoder's size (384 px) plus a global view. A 640x480 camera frame
is first upscaled to 1536x1152: 12 tiles + 1, each of them costing the vision encoder and the
decoder's prefill, for detail the camera never had. Asking for the smallest multiple of the
tile that holds the frame (768 px: 4 tiles + 1) keeps every camera pixel and drops the rest.
"""

import math


def fitted_size_kwargs(processor, images, processor_kwargs: dict) -> dict:
    """Return the processor keyword arguments that stop an upscale, or {} when none applies.

    It applies to processors that split images into tiles ('do_image_splitting', with a
    'longest_edge' size and tile size), when the frames are smaller than that edge and the
    user's processor_kwargs choose no size of their own (their choice wins).
    """
    image_processor = getattr(processor, 'image_processor', None)
    size = getattr(image_processor, 'size', None)
    tile = getattr(image_processor, 'max_image_size', None)
    if 'size' in processor_kwargs or not getattr(image_processor, 'do_image_splitting', False):
        return {}
    longest = longest_edge(size)
    tile = longest_edge(tile)
    if not (longest and tile and images):
        return {}
    needed = max(max(image.size) for image in images)  # PIL: (width, height)
    edge = min(longest, math.ceil(needed / tile) * tile)
    return {'size': {'longest_edge': edge}} if edge < longest else {}


def longest_edge(size) -> int:
    """Return the 'longest_edge' of a size dict (or SizeDict), 0 when it has none."""
    try:
        return int(size['longest_edge'] or 0)
    except (KeyError, TypeError, ValueError):
        return 0
