"""Which topics of a recording are the camera and the instructions: one rule for every tool.

vlm_replay and vlm_eval find them alike. Topics are found by type, so a plain recording of a
robot works without options; an instruction topic is a std_msgs/String topic whose last name
segment is 'instruction' (what vlm_node subscribes to). A recording that leaves the choice open
is refused with its topics listed rather than guessed at.
"""

from typing import Optional

from .storage import IMAGE_TYPES, STRING_TYPE, BagError


def is_instruction_name(topic: str) -> bool:
    """Tell whether a topic name is an instruction feed ('/robot/instruction', 'instruction')."""
    return topic.rstrip('/').rsplit('/', 1)[-1] == 'instruction'


def describe_topics(reader) -> str:
    """List a bag's topics with type and message count, for errors that ask the user to choose."""
    return '; '.join(f'{topic} ({info.msgtype}, {info.msgcount} msgs)'
                     for topic, info in sorted(reader.topics.items())) or 'no topics'


def _checked(reader, wanted: str, types: tuple, option: str) -> str:
    info = reader.topics.get(wanted)
    if info is None or info.msgtype not in types:
        found = 'is not in' if info is None else f'is a {info.msgtype} topic in'
        raise BagError(f'{option} {wanted} {found} {reader.paths[0]}; need a '
                       f'{" or ".join(types)} topic. Topics: {describe_topics(reader)}')
    return wanted


def image_topic(reader, wanted: Optional[str] = None) -> str:
    """Return the camera topic: wanted (checked), else the one Image, else CompressedImage one."""
    if wanted is not None:
        return _checked(reader, wanted, IMAGE_TYPES, '--image-topic')
    for msgtype in IMAGE_TYPES:
        found = sorted(t for t, i in reader.topics.items() if i.msgtype == msgtype)
        if len(found) == 1:
            return found[0]
        if found:
            raise BagError(f'{len(found)} {msgtype} topics in {reader.paths[0]} could be the '
                           f'camera images: {", ".join(found)}; pick one with --image-topic')
    raise BagError(f'no {" or ".join(IMAGE_TYPES)} topic in {reader.paths[0]} for the camera '
                   f'images; name one with --image-topic. Topics: {describe_topics(reader)}')


def camera_topic(reader, name: str, topic: str) -> str:
    """Return the image topic of the camera called name (vlm_eval --camera NAME=TOPIC), checked."""
    return _checked(reader, topic, IMAGE_TYPES, f'camera {name}:')


def instruction_topic(reader, wanted: Optional[str] = None,
                      required: bool = True) -> Optional[str]:
    """Return the instruction topic: wanted (checked), else the one found by name and type.

    None when the recording has none and required is False; otherwise the error says how to
    give instructions to a recording without them.
    """
    if wanted is not None:
        return _checked(reader, wanted, (STRING_TYPE,), '--instruction-topic')
    found = sorted(t for t, i in reader.topics.items()
                   if i.msgtype == STRING_TYPE and is_instruction_name(t))
    if len(found) > 1:
        raise BagError(f'{len(found)} instruction topics in {reader.paths[0]}: '
                       f'{", ".join(found)}; pick one with --instruction-topic')
    if found or not required:
        return found[0] if found else None
    raise BagError(f'no instruction topic (std_msgs/msg/String named .../instruction) in '
                   f'{reader.paths[0]}; name one with --instruction-topic, or give the '
                   'instructions with --instructions FILE or --instruction TEXT. Topics: '
                   f'{describe_topics(reader)}')


def unheard(subscribers: dict, cameras: list, inputs: list) -> list:
    """Return the played topics vlm_node consumes that nobody subscribes to yet.

    ``subscribers``: {played topic: its subscription count}; ``cameras`` and ``inputs``: the
    played image and instruction topics. One camera topic subscribed is enough, and a
    camera's other topics (camera_info, a second camera) have no subscriber where the node is
    the only listener: waiting for them held playback for all of --wait-for-subscribers. A
    recording of neither camera nor instructions waits for every topic it plays.
    """
    lonely = [topic for topic, count in subscribers.items() if not count]
    if not cameras and not inputs:
        return lonely
    quiet = [topic for topic in cameras if topic in lonely]
    return [topic for topic in inputs if topic in lonely] + (
        quiet if len(quiet) == len(cameras) else [])

