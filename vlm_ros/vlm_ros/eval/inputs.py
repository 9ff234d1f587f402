"""What a VLM was shown and asked in a recording: frames, instructions, and which goes with which.

vlm_eval answers every instruction with the camera frame the live node would have had: the
latest one logged at or before the instruction. Topics are found by the rules vlm_replay uses
too (bag/topics.py); instructions come from the recording or from the command line
(bag/instructions.py). Frames are read twice, first for their times and stamps only, then
decoded just where a request uses them: a long recording of raw camera frames does not fit in
memory, the few frames that get asked about do.
"""

import bisect
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

from ..bag import topics
from ..bag.instructions import Instruction
from ..bag.storage import IMAGE_TYPES, stamp_ns
from ..node.image_conversion import ImageConversionError, compressed_to_rgb, image_to_rgb
from .messages import read_messages

IMAGE_TYPE = IMAGE_TYPES[0]  # raw frames; IMAGE_TYPES[1] is CompressedImage


@dataclass(frozen=True)
class FrameRef:
    """One camera frame: its position on the image topic, log time and header stamp (ns)."""

    index: int
    bag_time_ns: int
    stamp_ns: int


@dataclass(frozen=True)
class Camera:
    """One camera of a recording: its name (as vlm_node's cameras), topic, type and frames."""

    name: str
    topic: str
    msgtype: str
    frames: list

    @functools.cached_property
    def times(self) -> list:
        """The frames' log times, sorted (log order): looked up for every request."""
        return [frame.bag_time_ns for frame in self.frames]


@dataclass
class BagInputs:
    """The frames and instructions of one recording, in log-time order.

    ``frames`` are the first camera's; ``cameras`` holds every camera (the first included)
    when the recording is evaluated with several (vlm_eval --camera), else it is empty.
    """

    path: str
    image_topic: str
    image_type: str
    instruction_topic: str
    start_ns: int
    frames: list
    instructions: list
    cameras: tuple = ()


def read_inputs(reader, image_topic: Optional[str] = None,
                instruction_topic: Optional[str] = None,
                ask: Optional[Callable[[int, int, list], list]] = None,
                cameras: tuple = ()) -> BagInputs:
    """Find the image and instruction topics (bag/topics.py) and index their messages.

    ``ask(start_ns, end_ns, frame_times)`` gives the instructions when the command line does
    (bag/instructions.py); the recording's own instruction topic is then not read.
    ``cameras``: (name, topic) pairs of several cameras, in place of image_topic. Raises
    BagError naming the bag's topics when a topic is missing, of the wrong type, or when
    several would fit.
    """
    named = [(name, topics.camera_topic(reader, name, topic)) for name, topic in cameras] or \
        [('', topics.image_topic(reader, image_topic))]
    if ask is None:
        instruction_topic = topics.instruction_topic(reader, instruction_topic)
    frames = {topic: [] for _, topic in named}
    instructions = []
    wanted = [c for c in reader.connections if c.topic in frames or
              (ask is None and c.topic == instruction_topic)]
    for connection, log_ns, msg in read_messages(reader, wanted):
        if connection.topic in frames:
            found = frames[connection.topic]
            found.append(FrameRef(len(found), log_ns, stamp_ns(msg)))
        else:
            instructions.append(Instruction(log_ns, msg.data.strip()))
    first = named[0][1]
    if ask is not None:
        instructions = ask(reader.start_time, reader.end_time,
                           [f.bag_time_ns for f in frames[first]])
        instruction_topic = '(command line)'
    every = tuple(Camera(name, topic, reader.topics[topic].msgtype, frames[topic])
                  for name, topic in named) if cameras else ()
    return BagInputs(str(reader.paths[0]), first, reader.topics[first].msgtype,
                     instruction_topic, reader.start_time, frames[first], instructions, every)


def latest_at_or_before(frame_times: list, query_times: list) -> list:
    """Pair each query time with the index of the latest frame time <= it (None: no frame yet).

    frame_times must be sorted (log times of one topic are); equal times count as before, as a
    frame logged in the same nanosecond as an instruction was already there to be seen.
    """
    return [bisect.bisect_right(frame_times, t) - 1 if frame_times and t >= frame_times[0]
            else None for t in query_times]


def pair_instructions(inputs: BagInputs) -> list:
    """Return the frame index (or None) each instruction of inputs is answered with."""
    return latest_at_or_before([f.bag_time_ns for f in inputs.frames],
                               [i.bag_time_ns for i in inputs.instructions])


@dataclass(frozen=True)
class Views:
    """The frame of each camera one request is answered with, and how far apart they are.

    ``frames``: one FrameRef per camera, None for a camera with no frame yet; ``skew``: seconds
    between the earliest and the latest header stamp (0.0 unless every camera has a frame).
    """

    frames: tuple
    skew: float


def synchronized(cameras: tuple, bag_time_ns: int, max_skew: float, wait_s: float) -> Views:
    """Return each camera's frame for a request at bag_time_ns, as vlm_node takes them.

    The node takes each camera's latest frame; where their stamps lie more than max_skew
    seconds apart (0: no limit), it waits up to wait_s for newer ones. So: the latest frames
    logged at or before the request, else those at the first later log time within wait_s
    whose stamps are close enough, else the last ones looked at (the caller reports their
    skew). A camera with no frame at or before the request has none (None), as one camera's
    request has no frame then (latest_at_or_before).
    """
    times = [camera.times for camera in cameras]
    until = bag_time_ns + round(wait_s * 1e9)
    later = sorted({t for found in times for t in found[bisect.bisect_right(found, bag_time_ns):
                                                         bisect.bisect_right(found, until)]})
    views = None
    for when in [bag_time_ns, *later]:
        picked = tuple(None if index is None else camera.frames[index] for camera, index in
                       zip(cameras, (latest_at_or_before(found, [when])[0] for found in times),
                           strict=True))
        stamps = [frame.stamp_ns for frame in picked if frame is not None]
        skew = (max(stamps) - min(stamps)) / 1e9 if None not in picked else 0.0
        views = Views(picked, skew)
        if None in picked or max_skew <= 0 or skew <= max_skew:
            break
    return views


def frames_by_stamp(frames: list) -> dict:
    """Map header stamp (ns) -> FrameRef; the first frame wins when a driver repeats a stamp."""
    found = {}
    for frame in frames:
        found.setdefault(frame.stamp_ns, frame)
    return found


def decode_frames(reader, inputs: BagInputs, indices, camera: Optional[Camera] = None) -> dict:
    """Decode the frames at indices to HxWx3 uint8 RGB; frames that fail map to the error.

    The frames are the first camera's, or ``camera``'s. A frame that cannot be converted (an
    unsupported encoding, truncated data) becomes its ImageConversionError, so the requests on
    it are reported as bad input, not a crash.
    """
    wanted = set(indices)
    if not wanted:
        return {}
    topic, msgtype = (camera.topic, camera.msgtype) if camera else \
        (inputs.image_topic, inputs.image_type)
    convert = functools.partial(image_to_rgb, copy=True) if msgtype == IMAGE_TYPE \
        else compressed_to_rgb
    connections = [c for c in reader.connections if c.topic == topic]
    decoded = {}
    for index, (connection, _, raw) in enumerate(reader.messages(connections)):
        if index in wanted:
            msg = reader.deserialize(raw, connection.msgtype)
            try:
                decoded[index] = convert(msg)
            except ImageConversionError as exc:
                decoded[index] = exc
            if len(decoded) == len(wanted):
                break
    return decoded
