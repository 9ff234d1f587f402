"""A training set for an action head: (features, action) pairs from a recording (issue 28).

Each camera frame logged once an instruction is in force is paired with that instruction and
with the first action logged at or after the frame, within a window: what the robot was told
to do having seen it. The features are the engine's (engine/features.py) for the frame and the
instruction's plan prompt, as vlm_node publishes them with publish_features. The set is
written to a new hidden folder beside the output and renamed into place at the end, so a
failed or interrupted run leaves nothing half written.
"""

import bisect
import json
import os
import pathlib
import shutil
import uuid
from dataclasses import dataclass

import numpy as np

from ..engine import Engine, Request, VlmError
from ..engine.features import FeatureSpec
from .actions import Actions, action_after
from .inputs import BagInputs, FrameRef


@dataclass(frozen=True)
class Pair:
    """One example: a frame, the instruction in force then (its index), and an action's index."""

    frame: FrameRef
    instruction: int
    action: int


def pair_frames(inputs: BagInputs, actions: Actions, window_ns: int) -> tuple:
    """Return (pairs, frames left out for want of an instruction or of an action)."""
    times = [i.bag_time_ns for i in inputs.instructions]
    pairs, without = [], {'instruction': 0, 'action': 0}
    for frame in inputs.frames:
        told = bisect.bisect_right(times, frame.bag_time_ns) - 1
        if told < 0 or not inputs.instructions[told].text:
            without['instruction'] += 1
            continue
        action = action_after(actions, frame.bag_time_ns, window_ns)
        if action is None:
            without['action'] += 1
            continue
        pairs.append(Pair(frame, told, action))
    return pairs, without


def features_of(engine: Engine, inputs: BagInputs, pairs: list, images: dict,
                spec: FeatureSpec, batch_size: int) -> tuple:
    """Return (the features of every pair, N x hidden; the engine batches they took).

    The batches are counted as the engine is asked, so that vlm_export can say what ran.
    VlmError where a frame cannot be decoded or the engine made no features.
    """
    rows, batches = [], 0
    for start in range(0, len(pairs), batch_size):
        batch = pairs[start:start + batch_size]
        for pair in batch:
            if isinstance(images[pair.frame.index], Exception):
                raise VlmError('bad_input', f'frame {pair.frame.index} of {inputs.image_topic} '
                               f'cannot be decoded: {images[pair.frame.index]}')
        results = engine.run([Request('plan', images[p.frame.index],
                                      inputs.instructions[p.instruction].text, 1,
                                      features=spec) for p in batch])
        batches += 1
        rows += [features_data(result) for result in results]
    return np.stack(rows), batches


def features_data(result) -> np.ndarray:
    """Return the features vector of an engine Result asked for them; VlmError where none."""
    if result.features is None or result.features.problem:
        raise VlmError('bad_input', result.features.problem if result.features
                       else 'the engine made no features')
    return result.features.data


DATASET_FILES = {'dataset.npz', 'manifest.json'}


def check_out(out: pathlib.Path) -> None:
    """Refuse an output folder that holds anything but an earlier dataset: it is replaced."""
    if out.exists() and (not out.is_dir() or set(os.listdir(out)) - DATASET_FILES):
        raise VlmError('bad_input', f'{out} exists and is not a dataset of vlm_export (it is '
                       'replaced as a whole); choose another --out')


def write_dataset(out: pathlib.Path, features: np.ndarray, pairs: list, actions: Actions,
                  manifest: dict) -> None:
    """Write dataset.npz and manifest.json into out, all or nothing (check_out first).

    They go into a new hidden folder beside out, which then takes out's place; an earlier
    dataset is moved aside first and removed last, so no moment lacks both.
    """
    check_out(out)
    # mkdir, not tempfile.mkdtemp: the folder becomes the dataset, with the user's umask's
    # mode, where mkdtemp's 0700 hid it from every other user.
    partial = out.parent / f'.{out.name}.{uuid.uuid4().hex[:8]}.partial'
    partial.mkdir()
    earlier = partial.with_suffix('.earlier')
    try:
        np.savez(partial / 'dataset.npz', features=features,
                 actions=np.asarray([actions.vectors[p.action] for p in pairs],
                                    dtype=np.float32),
                 frame_stamp_ns=np.asarray([p.frame.stamp_ns for p in pairs], dtype=np.int64),
                 frame_log_ns=np.asarray([p.frame.bag_time_ns for p in pairs], dtype=np.int64),
                 action_log_ns=np.asarray([actions.log_ns[p.action] for p in pairs],
                                          dtype=np.int64),
                 instruction=np.asarray([p.instruction for p in pairs], dtype=np.int32))
        (partial / 'manifest.json').write_text(json.dumps(manifest, indent=2) + '\n',
                                               encoding='utf-8')
        if out.exists():
            os.replace(out, earlier)
        os.replace(partial, out)
    except BaseException:
        if earlier.exists() and not out.exists():
            os.replace(earlier, out)  # the earlier dataset stays where it was
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(earlier, ignore_errors=True)
