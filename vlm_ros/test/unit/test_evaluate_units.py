"""vlm_eval's parts that need no model: pairing instructions with frames, topics, references.

The same recordings as the end-to-end tests (system/test_evaluate.py, support/eval_bags.py):
instructions before, between and exactly at frame times, so pairing has known answers.
"""

import json
from types import SimpleNamespace

import pytest
import vlm_ros.bag.storage as bags
from engine_fixtures import scene
from eval_bags import (
    FRAME_TIMES,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    INSTRUCTIONS,
    STAMPS,
    write_input_bag,
    write_recorded_bag,
)
from vlm_ros.engine import VlmError
from vlm_ros.eval.inputs import latest_at_or_before, read_inputs


def test_latest_at_or_before():
    frames = [10, 20, 30]
    assert latest_at_or_before(frames, [5, 10, 15, 20, 29, 30, 99]) == [None, 0, 0, 1, 1, 2, 2]
    assert latest_at_or_before([], [1, 2]) == [None, None]
    assert latest_at_or_before(frames, []) == []


def test_read_inputs_detects_topics(tmp_path):
    with bags.open_bag(write_input_bag(tmp_path / 'bag')) as reader:
        inputs = read_inputs(reader)
    assert (inputs.image_topic, inputs.instruction_topic) == (IMAGE_TOPIC, INSTRUCTION_TOPIC)
    assert [f.stamp_ns for f in inputs.frames] == STAMPS
    assert [i.text for i in inputs.instructions] == [t for _, t in INSTRUCTIONS]


def test_ambiguous_wrong_and_missing_topics_name_the_topics(tmp_path):
    with bags.open_bag(write_input_bag(tmp_path / 'two', extra_image_topic='/cam2')) as reader:
        with pytest.raises(bags.BagError, match=r'/cam2, /camera/image_raw.*--image-topic'):
            read_inputs(reader)
        with pytest.raises(bags.BagError, match=r'--image-topic /robot/status is a '
                           r'std_msgs/msg/String topic'):
            read_inputs(reader, '/robot/status')
        with pytest.raises(bags.BagError, match=r'--instruction-topic /nothing is not in .*'
                           r'/camera/image_raw \(sensor_msgs/msg/Image, 3 msgs\)'):
            read_inputs(reader, '/cam2', '/nothing')
    with bags.open_bag(write_recorded_bag(tmp_path / 'answers')) as reader:
        with pytest.raises(bags.BagError, match=r'no sensor_msgs/msg/Image or .*CompressedImage '
                           r'topic in .* name one with --image-topic\. Topics: /robot1/caption'):
            read_inputs(reader)


@pytest.mark.parametrize('entry, complaint', [
    ({'stamp_ns': 1, 'task': 'plan', 'text': 'x'}, 'target must be a non-empty string'),
    ({'stamp_ns': 1, 'task': 'dance', 'target': 'x'}, 'task must be one of plan, caption'),
    ({'stamp_ns': '1', 'task': 'vqa', 'target': 'x'}, 'stamp_ns must be a non-negative'),
    ({'stamp_ns': 1, 'task': 'vqa', 'target': 'x', 'stamp': 2}, 'unknown field'),
])
def test_references_file_errors_name_entry_and_field(tmp_path, entry, complaint):
    from vlm_ros.eval.references import load_references

    path = tmp_path / 'refs.yaml'
    path.write_text(json.dumps([{'stamp_ns': 5, 'task': 'caption', 'target': 'ok'}, entry]))
    with pytest.raises(VlmError, match=f'refs.yaml entry 2: {complaint}'):
        load_references(path)


def test_failed_batches_and_bad_inputs_become_records(tmp_path, monkeypatch):
    """Empty instructions, undecodable frames and failing batches are records, not crashes.

    The seconds in the model add up the batches that ran, the failed one too.
    """
    from vlm_ros.engine import Result
    from vlm_ros.eval import offline
    from vlm_ros.eval.inputs import FrameRef
    from vlm_ros.eval.offline import Pending, run_engine

    clock = [100.0]  # the model's time: each batch advances it, nothing else does
    monkeypatch.setattr(offline, 'time', SimpleNamespace(perf_counter=lambda: clock[0]))

    class Engine:
        def __init__(self):
            self.calls = 0

        def run(self, requests):
            self.calls += 1
            clock[0] += 0.25 * self.calls
            if self.calls == 2:
                raise VlmError('out_of_memory', 'CUDA out of memory')
            return [Result(r.task, 'ok', (), True, 'text', 1, 0.1, 0.2) for r in requests]

    with bags.open_bag(write_input_bag(tmp_path / 'bag')) as reader:
        inputs = read_inputs(reader)
    frame = FrameRef(0, FRAME_TIMES[0], STAMPS[0])
    broken = FrameRef(1, FRAME_TIMES[1], STAMPS[1])
    pending = [Pending('caption', '', frame, 1), Pending('plan', '', frame, 2),
               Pending('caption', '', broken, 3), Pending('vqa', 'what?', frame, 4),
               Pending('plan', 'go', None, 5)]
    images = {0: scene('red'), 1: ValueError('truncated frame')}
    records, seconds = run_engine(Engine(), inputs, pending, images, batch_size=1)
    assert [(r['status'], r['batch']) for r in records] == [
        ('OK', 0), ('BAD_INPUT', None), ('BAD_INPUT', None), ('MODEL_ERROR', 1),
        ('NO_IMAGE', None)]
    assert records[1]['message'] == 'empty instruction'
    assert records[2]['message'] == 'truncated frame'
    assert 'CUDA out of memory' in records[3]['message']
    assert seconds == 0.25 + 0.5
