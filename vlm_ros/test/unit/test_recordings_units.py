"""Real robot recordings in, answers out: ROS 1 bags, compressed cameras, no instruction topic.

The recordings are written as robots make them (recordings.py): a ROS 1 bag of a Raspberry Pi
camera publishing CompressedImage 'jpg' frames on a relative topic, and nothing else. Both
tools get the instructions from the command line, by the same rules.
"""


import pytest
from vlm_ros.bag.instructions import from_file, repeated
from vlm_ros.bag.storage import STRING_TYPE, BagError, open_bag, serialize
from vlm_ros.bag.writer_thread import WriterThread

T0 = 1_767_225_600 * 10**9


def test_instruction_schedules(tmp_path):
    frames = [T0 + k * 10 for k in range(7)]
    assert [i.bag_time_ns for i in repeated(' go ', frames, T0, T0 + 60, every=3)] == [
        T0 + 20, T0 + 50]
    assert [(i.bag_time_ns, i.text) for i in repeated('go', frames, T0, T0 + 60)] == [(T0, 'go')]
    assert repeated('go', frames, T0, T0 + 60, at=0.00000003)[0].bag_time_ns == T0 + 30
    (tmp_path / 'three.txt').write_text('a\nb\n\nc\n')
    assert [(i.bag_time_ns - T0, i.text) for i in from_file(tmp_path / 'three.txt', T0,
                                                             T0 + 400)] == [
        (100, 'a'), (200, 'b'), (300, 'c')]
    (tmp_path / 'timed.yaml').write_text(f'- {{stamp: {(T0 + 500_000_000) / 1e9}, text: late}}\n'
                                         '- {time: 0, text: early}\n')
    assert [i.text for i in from_file(tmp_path / 'timed.yaml', T0, T0 + 10**9)] == [
        'early', 'late']


@pytest.mark.parametrize(('content', 'reason'), [
    ('- {time: 99, text: x}\n', 'outside the recording'),
    ('- {time: 1, stamp: 2, text: x}\n', 'either time'),
    ('- {time: .nan, text: x}\n', 'non-negative number'),
    ('- {time: 1, text: ""}\n', 'non-empty string'),
    ('- {time: 1, text: x, task: vqa}\n', 'need a mapping'),
    ('[]\n', 'no instructions'),
])
def test_bad_instruction_files_name_the_entry(tmp_path, content, reason):
    (tmp_path / 'bad.yaml').write_text(content)
    with pytest.raises(Exception, match=reason):
        from_file(tmp_path / 'bad.yaml', T0, T0 + 10**9)


def test_schedules_outside_the_recording_are_refused():
    with pytest.raises(BagError, match='after the end'):
        repeated('go', [T0], T0, T0 + 10**9, at=5.0)
    with pytest.raises(BagError, match='only 2 frames'):
        repeated('go', [T0, T0 + 1], T0, T0 + 10**9, every=3)


def test_a_recording_the_disk_cannot_keep_up_with_drops_what_would_not_fit_and_fails(tmp_path):
    """Messages wait in memory for the disk up to a bound: the rest is dropped, and said."""
    writer = WriterThread(tmp_path / 'bag', 'mcap', {'/plan': STRING_TYPE}, max_queued=1000)
    plan = writer.connections['/plan']
    writer.write(plan, 1, serialize(STRING_TYPE, data='x' * 100))
    writer.write(plan, 2, serialize(STRING_TYPE, data='y' * 2000))  # more than may ever wait
    with pytest.raises(BagError, match='the disk did not keep up: 1 messages dropped, beyond '
                       '1000 bytes waiting for it'):
        writer.close()
    with open_bag(tmp_path / 'bag') as reader:
        assert [log_ns for _, log_ns, _ in reader.messages()] == [1]
