"""The reference action head (vlm_ros/head): its training targets, and what it refuses.

What it learns: system/test_head.py (a unit test trains no model).
"""


import json
import math
import re

import numpy as np
import pytest
import torch
from head_datasets import TWIST, write_dataset
from vlm_ros.engine import VlmError
from vlm_ros.head import training
from vlm_ros.head.policy import SKILLS, VALUES, ActionNet, Head
from vlm_ros.tools.action_head import act_on, feature_values, mismatch

from vlm_ros_msgs.msg import Features


def test_chunks_are_the_actions_after_each_pair_within_its_instruction():
    actions = np.arange(5, dtype=np.float32)[:, None]
    chunks = training.chunk_targets(actions, np.array([0, 0, 0, 1, 1]), 3)[..., 0]
    assert chunks.tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]]


@pytest.mark.parametrize('make, complaint', [
    (lambda folder: folder.mkdir(), 'is not a dataset of vlm_export: no dataset.npz or'),
    (lambda folder: write_dataset(folder, np.zeros((0, 4), np.float32), np.zeros((0, 6)),
                                  'geometry_msgs/msg/Twist', TWIST), 'no pairs'),
    (lambda folder: write_dataset(folder, np.full((3, 4), np.nan, np.float32), np.zeros((3, 6)),
                                  'geometry_msgs/msg/Twist', TWIST), 'not finite'),
    (lambda folder: _cut(folder, 0), 'is not a dataset of vlm_export: its dataset.npz cannot be '
     'read (EOFError: No data left in file)'),
    (lambda folder: _cut(folder, 300), 'is not a dataset of vlm_export: its dataset.npz cannot '
     'be read (BadZipFile: '),
    (lambda folder: _cut(folder, -40), 'is not a dataset of vlm_export: its dataset.npz cannot '
     'be read'),
    (lambda folder: write_dataset(folder, np.zeros((3, 4), np.float32), np.zeros((3, 6)),
                                  'geometry_msgs/msg/Twist', TWIST, instruction=[0, 0]),
     'no pairs of one features vector, one action and one instruction each (features (3, 4), '
     'actions (3, 6), instruction (2,))'),
    (lambda folder: write_dataset(folder, np.zeros((3, 4), np.float32), np.zeros(3),
                                  'geometry_msgs/msg/Twist', TWIST), 'no pairs'),
], ids=['empty-folder', 'no-pairs', 'nan', 'empty-file', 'truncated-file', 'cut-short',
        'instructions-short', 'actions-not-rows'])
def test_a_folder_that_is_no_usable_dataset_is_refused(tmp_path, make, complaint):
    make(tmp_path / 'set')
    with pytest.raises(VlmError, match=re.escape(complaint)):
        training.train(tmp_path / 'set', seconds=1)


def _cut(folder, size: int):
    """Write a dataset, then cut its dataset.npz to size bytes (negative: that many fewer)."""
    write_dataset(folder, np.zeros((3, 4), np.float32), np.zeros((3, 6)),
                  'geometry_msgs/msg/Twist', TWIST)
    data = (folder / 'dataset.npz').read_bytes()
    (folder / 'dataset.npz').write_bytes(data[:size])


def test_a_file_that_is_no_head_is_refused(tmp_path):
    (tmp_path / 'head.pt').write_bytes(b'not a head')
    with pytest.raises(VlmError, match='is not a head of vlm_train_head'):
        training.load(tmp_path / 'head.pt')
    # One that does not say what its features were made with could not check them.
    stored = _head().to_file()
    del stored['source']['processor_kwargs']
    torch.save(stored, tmp_path / 'head.pt')
    with pytest.raises(VlmError, match="is not a head of vlm_train_head: KeyError: "
                       "'processor_kwargs'"):
        training.load(tmp_path / 'head.pt')


def _head() -> Head:
    return Head(ActionNet(3, 2, 8, 1), SKILLS, {'model': 'm', 'layer': -1, 'pooling': 'mean',
                                                'max_image_side': 640, 'processor_kwargs': {}},
                'vlm_ros_msgs/msg/StepCommand', ['skill'], ['pick', 'place'])


def _made(side: int = 640, kwargs: str = '') -> str:
    """Return Features.processor as vlm_node says it: its parameters' values."""
    return json.dumps({'max_image_side': side, 'processor_kwargs': kwargs})


def test_16_bit_features_decode_and_features_made_otherwise_are_named():
    values = np.array([1.5, -2.25, 0.125], np.float32)
    half = Features(dtype='float16', data16=values.astype(np.float16).view(np.uint16).tolist())
    brain = Features(dtype='bfloat16', data16=(values.view(np.uint32) >> 16).astype(
        np.uint16).tolist())
    assert feature_values(half).tolist() == feature_values(brain).tolist() == values.tolist()
    with pytest.raises(ValueError, match='unknown dtype'):
        feature_values(Features(dtype='int8'))
    head = _head()
    assert mismatch(Features(layer=2, layers=3, pooling='mean', processor=_made()), head,
                    3) == ''  # -1 is 2
    assert 'the head was trained on layer -1, pooling mean' in mismatch(
        Features(layer=1, layers=3, pooling='mean', processor=_made()), head, 3)
    assert mismatch(Features(layer=-1, layers=3, pooling='mean', processor=_made()), head, 4) == \
        '4 values; the head takes 3'
    assert 'no values: no image' in mismatch(Features(problem='no image'), head, 0)


@pytest.mark.parametrize('side, kwargs, said', [
    (320, '', 'max_image_side 320, processor_kwargs {}'),
    (640, '{"do_image_splitting": false}',
     'max_image_side 640, processor_kwargs {"do_image_splitting": false}'),
])
def test_features_of_images_processed_otherwise_are_named(side, kwargs, said):
    """Other pixels in, other hidden states out: the head was trained at 640 with no options."""
    features = Features(layer=-1, layers=3, pooling='mean', processor=_made(side, kwargs))
    assert mismatch(features, _head(), 3) == f'features of images at {said}; the head was ' \
        'trained on max_image_side 640, processor_kwargs {}'


@pytest.mark.parametrize('processor', ['', '[1', '{"max_image_side": 640}', '[]',
                                       '{"max_image_side": 640, "processor_kwargs": 7}',
                                       '{"max_image_side": 640, "processor_kwargs": "[1]"}',
                                       '[' * 100_000])
def test_features_that_do_not_say_how_they_were_made_are_refused(processor):
    """Anything on the DDS domain can publish Features: a ValueError, which the node logs."""
    features = Features(layer=-1, layers=3, pooling='mean', processor=processor)
    with pytest.raises(ValueError, match='the features do not say how their images were '
                       'processed'):
        mismatch(features, _head(), 3)


@pytest.mark.parametrize('head', [
    _head(), Head(ActionNet(3, 6, 8, 1), VALUES, _head().source, 'geometry_msgs/msg/Twist',
                  TWIST, mean=np.zeros(6), scale=np.ones(6))], ids=['skills', 'values'])
def test_no_action_comes_of_features_that_are_not_finite_or_that_make_none(head):
    """Anything on the DDS domain can publish features: no NaN command reaches a robot."""
    made = {'layer': -1, 'layers': 3, 'pooling': 'mean', 'processor': _made(),
            'dtype': 'float32'}
    action, why = act_on(Features(**made, data=[0.5, -0.25, 1.0]), head)
    assert why == '' and action is not None
    assert act_on(Features(**made, data=[0.5, math.nan, 1.0]), head) == \
        (None, 'features that are not finite')
    # Finite, but far beyond any training set's: LayerNorm overflows, the output is NaN.
    assert act_on(Features(**made, data=[3e38, -3e38, 3e38]), head) == (
        None, 'the head computes no finite action from these features (values up to 3e+38)')
