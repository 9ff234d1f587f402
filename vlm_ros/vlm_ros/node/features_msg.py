"""A plan's features (engine Result.features) as the vlm_ros_msgs/Features a head subscribes to.

Values go out as float32, or as float16 or bfloat16 bit patterns (half the bytes: a 2 B model's
per-token states of a 640x480 frame are megabytes). Features over max_feature_bytes go out
without values, saying so, so that a head waiting for them learns why none came.
"""

import array
import json

import numpy as np

from vlm_ros_msgs.msg import Features

from .jobs import Outcome

ITEM_BYTES = {'float32': 4, 'float16': 2, 'bfloat16': 2}


def bfloat16_words(values: np.ndarray) -> np.ndarray:
    """Return float32 values as bfloat16 bit patterns, rounded to nearest even (as torch)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    nan = np.isnan(values)
    words = rounded.astype(np.uint16)
    words[nan] = 0x7FC0  # a quiet NaN: rounding could turn one into infinity
    return words


def features_msg(outcome: Outcome, header, request_id: str, settings, model: str) -> Features:
    """Build the Features message of an outcome: its features, or why there are none.

    header and request_id: the Plan's, which the message is joined to ('' for ~/features'
    own answers and features_rate's). An outcome without features (no frame, cameras out of
    sync) gives a message without values whose problem is the outcome's reason, so that a
    head waiting for features learns why none come.
    """
    job = outcome.job
    msg = Features(header=header, request_id=request_id, instruction=job.text,
                   model=model, cameras=[name for name, _ in job.sources],
                   images=[image for _, image in job.sources],
                   dtype=settings.features_dtype,
                   processor=json.dumps({'max_image_side': settings.max_image_side,
                                         'processor_kwargs': settings.processor_kwargs}))
    found = outcome.result.features if outcome.result is not None else None
    if found is None:
        msg.problem = outcome.message or 'no features were made'
        return msg
    msg.layer, msg.layers, msg.pooling = int(found.layer), int(found.layers), found.pooling
    size = found.data.size * ITEM_BYTES[settings.features_dtype]
    msg.problem = found.problem or (
        f'the features take {size} bytes ({"x".join(map(str, found.data.shape))} '
        f'{settings.features_dtype}); max_feature_bytes is {settings.max_feature_bytes}'
        if size > settings.max_feature_bytes else '')
    if msg.problem:
        return msg
    msg.shape = [int(n) for n in found.data.shape]
    flat = found.data.reshape(-1)
    if settings.features_dtype == 'float32':
        msg.data = array.array('f', flat.astype(np.float32).tobytes())
    else:
        words = flat.astype(np.float16).view(np.uint16) \
            if settings.features_dtype == 'float16' else bfloat16_words(flat)
        msg.data16 = array.array('H', words.tobytes())
    return msg


def fill_features_response(response, outcome: Outcome, features):
    """Fill a GetFeatures response: the Features (``features(outcome)``), or why there are none."""
    if outcome.result is None or outcome.result.features is None:
        response.success = False
        response.message = outcome.message or 'no features were made'
        return response
    response.features = features(outcome)
    response.success = not response.features.problem
    response.message = response.features.problem
    return response
