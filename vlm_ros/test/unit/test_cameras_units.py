"""Several cameras without DDS: which frames a request takes, and what it is told when it cannot.

The node's side over DDS, with two camera publishers, is system/test_cameras.py.
"""

import threading

import pytest
from std_msgs.msg import Header
from vlm_ros.engine import VlmError
from vlm_ros.node.batches import BatchRunner
from vlm_ros.node.frames import FrameSet
from vlm_ros.node.jobs import Job, Limits, Status
from vlm_ros.node.params import MAX_CAMERAS, check_camera_names, validate


def put(frames: FrameSet, camera: str, stamp: float) -> None:
    """Store a frame of camera stamped stamp, its frame_id telling camera and stamp apart."""
    store = frames.stores[frames.names.index(camera)]
    store.put(Header(frame_id=f'{camera}@{stamp}'), stamp, None, 'raw')


def stamps(found: list) -> list:
    return [None if frame is None else frame.stamp for frame in found]


def waiting(frames: FrameSet, stop=lambda: False) -> tuple:
    """Start a wait_for of every camera's frames within 0.1 s; return (thread, its result).

    It returns once it is waiting: its stop is called with the lock held, which the wait
    releases only inside Condition.wait, so a put() or wake() after this is one it sees
    there. Its timeout is far beyond the join's: a wait that ends is one that was woken.
    """
    checked, found = threading.Event(), []

    def stopped():
        answer = stop()
        checked.set()
        return answer
    waiter = threading.Thread(target=lambda: found.append(
        frames.wait_for(lambda _: True, 0.1, 600.0, stopped)), daemon=True)
    waiter.start()
    assert checked.wait(30.0), 'the waiter never looked at the frames'
    return waiter, found


def test_a_request_takes_each_cameras_newest_frame_once_they_lie_within_max_skew():
    """The newest frames come at once within max_skew, or after the wait's bound without.

    A waiting request is woken by each new frame: one that brings the frames within
    max_skew ends its wait then, not at its timeout.
    """
    frames = FrameSet(('head', 'wrist'))
    put(frames, 'head', 10.0)
    assert stamps(frames.wait_for(lambda _: True, 0.1, 0.0)) == [10.0, None]
    put(frames, 'wrist', 10.3)
    assert stamps(frames.wait_for(lambda _: True, 0.1, 0.0)) == [10.0, 10.3], 'latest, skewed'
    assert stamps(frames.wait_for(lambda _: True, 0.0, 0.0)) == [10.0, 10.3], '0: any skew'
    waiter, found = waiting(frames)
    put(frames, 'head', 10.35)  # closer to the wrist's frame: the wait ends
    waiter.join(30.0)
    assert not waiter.is_alive(), 'the new frame did not wake the waiting request'
    assert stamps(found[0]) == [10.35, 10.3]


def test_a_waiting_request_stops_when_woken_and_told_to():
    """wake() makes a waiting request check its stop condition, and it stops at once."""
    frames = FrameSet(('head', 'wrist'))
    stop = threading.Event()
    waiter, found = waiting(frames, stop.is_set)
    stop.set()
    frames.wake()
    waiter.join(30.0)
    assert not waiter.is_alive(), 'wake() did not end the wait of a stopped request'
    assert stamps(found[0]) == [None, None]


def test_without_a_cameras_parameter_there_is_one_camera_on_image():
    frames = FrameSet()
    assert frames.names == ('',) and frames.primary is frames.stores[0]


def runner(frames: FrameSet, now: float = 20.0, **limits) -> BatchRunner:
    """Return a BatchRunner without an engine: the jobs here are refused before one is needed."""
    values = Limits(**{'wait_for_image': 0.0, **limits})
    return BatchRunner(None, frames, lambda: now, lambda: values, lambda: None,
                       lambda names: '')


def answer(batch: BatchRunner):
    job = Job('plan', 'pick', done=None)
    (outcome,) = batch.serve([job])
    return job, outcome


def test_a_request_naming_cameras_waits_for_those_alone_in_its_order():
    frames = FrameSet(('head', 'wrist', 'arm'))
    put(frames, 'wrist', 19.9)
    put(frames, 'arm', 19.95)
    job = Job('vqa', 'what is it?', done=None, cameras=('arm', 'wrist'))
    assert stamps(frames.wait_for(lambda _: True, 0.1, 0.0, chosen=frames.select(job.cameras))
                  ) == [19.95, 19.9]
    (outcome,) = runner(frames, max_skew=0.01).serve([job])  # the head camera has no frame
    assert outcome.status == Status.UNSYNCHRONIZED
    assert '(arm 19.950, wrist 19.900)' in outcome.message
    assert [name for name, _ in job.sources] == ['arm', 'wrist']
    _, everyone = answer(runner(frames))
    assert everyone.message == 'no image arrived from camera head within 0 s'


@pytest.mark.parametrize('names, cameras, reason', [
    (('hand',), ('head', 'wrist'), 'unknown camera hand; the cameras are head, wrist'),
    (('head', 'head'), ('head', 'wrist'), 'a camera named twice in head, head; the cameras are'),
    (('head',), (), 'this node has one camera (on image) and no camera names; name none'),
])
def test_cameras_a_request_cannot_name_are_bad_input_naming_those_there_are(names, cameras,
                                                                          reason):
    frames = FrameSet(cameras)
    for camera in cameras or ('',):
        put(frames, camera, 19.9)
    (outcome,) = runner(frames).serve([Job('vqa', 'what?', done=None, cameras=names)])
    assert outcome.status == Status.BAD_INPUT and outcome.message.startswith(reason), outcome
    assert frames.select(()) == tuple(range(len(frames.stores)))


def test_a_camera_without_frames_is_named():
    frames = FrameSet(('head', 'wrist'))
    put(frames, 'head', 19.9)
    _, outcome = answer(runner(frames))
    assert outcome.status == Status.NO_IMAGE
    assert outcome.message == 'no image arrived from camera wrist within 0 s'


def test_frames_further_apart_than_max_skew_are_unsynchronized_with_the_skew():
    frames = FrameSet(('head', 'wrist'))
    put(frames, 'head', 19.9)
    put(frames, 'wrist', 19.6)
    job, outcome = answer(runner(frames, max_skew=0.1))
    assert outcome.status == Status.UNSYNCHRONIZED
    assert outcome.message.startswith("the cameras' latest frames are 0.300 s apart (head "
                                      '19.900, wrist 19.600); max_skew is 0.1 s')
    assert outcome.header.frame_id == 'head@19.9'
    assert 'stopped' not in outcome.message  # behind, but sending
    assert [(name, header.frame_id) for name, header in job.sources] == \
        [('head', 'head@19.9'), ('wrist', 'wrist@19.6')]
    assert job.skew == pytest.approx(0.3)


def test_a_stale_camera_is_named():
    frames = FrameSet(('head', 'wrist'))
    put(frames, 'head', 19.9)
    put(frames, 'wrist', 19.9)
    _, outcome = answer(runner(frames, now=25.0, max_image_age=1.0))
    assert outcome.status == Status.STALE_IMAGE
    assert outcome.message.startswith("camera head's latest image is 5.10 s old")


@pytest.mark.parametrize('names, reason', [
    (('head', 'head'), 'camera names repeat'),
    (('head', 'wrist/x'), 'camera names must be a letter'),
    (('1st',), 'camera names must be a letter'),
    (('',), 'camera names must be a letter'),
    (tuple(f'cam{i}' for i in range(MAX_CAMERAS + 1)), f'at most {MAX_CAMERAS} go in one'),
])
def test_camera_names_that_cannot_be_topics_or_words_are_refused(names, reason):
    with pytest.raises(VlmError, match=reason):
        check_camera_names(names)
    assert reason in validate('cameras', names)


def test_camera_names_that_can_be_topics_are_taken():
    check_camera_names(('head', 'wrist_left', 'Cam2'))
    assert validate('cameras', ()) is None


def test_a_camera_that_stopped_is_named_as_the_one_behind():
    frames = FrameSet(('head', 'wrist'))
    put(frames, 'head', 19.9)
    put(frames, 'wrist', 12.5)  # its last frame, 7.5 s ago
    _, outcome = answer(runner(frames, max_skew=0.1))
    assert outcome.status == Status.UNSYNCHRONIZED
    assert outcome.message.endswith('; camera wrist sent nothing newer for 7.5 s: has it '
                                    'stopped? (max_image_age answers its frames '
                                    'STATUS_STALE_IMAGE)'), outcome.message
