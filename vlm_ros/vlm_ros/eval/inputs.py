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

IMAGE_TYPE = IMAGE_TYPES[0]  # raw frames; IMAGE_TYPES[1] is CompressedImage


@dataclass(frozen=True)
class FrameRef:
    """One camera frame: its position on the image topic, log time and header stamp (ns)."""

    index: int
    bag_time_ns: int
    stamp_ns: int


@dataclass
class BagInputs:
    """The frames and instructions of one recording, in log-time order."""

    path: str
    image_topic: str
    image_type: str
    instruction_topic: str
    start_ns: int
    frames: list
    instructions: list


def read_inputs(reader, image_topic: Optional[str] = None,
                instruction_topic: Optional[str] = None,
                ask: Optional[Callable[[int, int, list], list]] = None) -> BagInputs:
    """Find the image and instruction topics (bag/topics.py) and index their messages.

    ``ask(start_ns, end_ns, frame_times)`` gives the instructions when the command line does
    (bag/instructions.py); the recording's own instruction topic is then not read. Raises
    BagError naming the bag's topics when a topic is missing, of the wrong type, or when
    several would fit.
    """
    image_topic = topics.image_topic(reader, image_topic)
    if ask is None:
        instruction_topic = topics.instruction_topic(reader, instruction_topic)
    image_type = reader.topics[image_topic].msgtype
    frames, instructions = [], []
    wanted = [c for c in reader.connections if c.topic == image_topic or
              (ask is None and c.topic == instruction_topic)]
    for connection, log_ns, raw in reader.messages(wanted):
        msg = reader.deserialize(raw, connection.msgtype)
        if connection.topic == image_topic:
            frames.append(FrameRef(len(frames), log_ns, stamp_ns(msg)))
        else:
            instructions.append(Instruction(log_ns, msg.data.strip()))
    if ask is not None:
        instructions = ask(reader.start_time, reader.end_time, [f.bag_time_ns for f in frames])
        instruction_topic = '(command line)'
    return BagInputs(str(reader.paths[0]), image_topic, image_type, instruction_topic,
                     reader.start_time, frames, instructions)


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


def frames_by_stamp(inputs: BagInputs) -> dict:
    """Map header stamp (ns) -> FrameRef; the first frame wins when a driver repeats a stamp."""
    found = {}
    for frame in inputs.frames:
        found.setdefault(frame.stamp_ns, frame)
    return found


def decode_frames(reader, inputs: BagInputs, indices) -> dict:
    """Decode the frames at indices to HxWx3 uint8 RGB; frames that fail map to the error.

    A frame that cannot be converted (an unsupported encoding, truncated data) becomes its
    ImageConversionError, so the requests on it are reported as bad input, not a crash.
    """
    wanted = set(indices)
    if not wanted:
        return {}
    convert = functools.partial(image_to_rgb, copy=True) if inputs.image_type == IMAGE_TYPE \
        else compressed_to_rgb
    connections = [c for c in reader.connections if c.topic == inputs.image_topic]
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
