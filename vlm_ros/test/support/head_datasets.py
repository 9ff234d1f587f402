"""Datasets as vlm_export writes them, for the reference action head's tests.

Their features carry the action (two clusters, one per command), so a head that learnt nothing
is told apart from one that did.
"""

import json

import numpy as np

TWIST = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')


def clusters(rows: int = 40, size: int = 16, seed: int = 1) -> tuple:
    """Return (features, which cluster each row is in): two noisy clusters, alternating."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, size)).astype(np.float32)
    which = np.arange(rows) % 2
    return centres[which] + 0.05 * rng.normal(size=(rows, size)).astype(np.float32), which


def write_dataset(folder, features, actions, action_type, columns, skills=(), instruction=None):
    folder.mkdir()
    np.savez(folder / 'dataset.npz', features=features, actions=np.asarray(actions, np.float32),
             instruction=np.zeros(len(features), np.int32) if instruction is None
             else np.asarray(instruction, np.int32))
    (folder / 'manifest.json').write_text(json.dumps({
        'model': 'm', 'layer': -1, 'pooling': 'mean', 'max_image_side': 640,
        'processor_kwargs': {},
        'actions': {'topic': '/a', 'type': action_type, 'columns': list(columns),
                    'skills': list(skills)}}))
    return folder
