"""The robot's commands in a recording, as numbers an action head can learn: one vector each.

A VLA's action head is trained on (features, action) pairs. The actions are what the robot
was commanded while the camera saw it: a velocity (geometry_msgs/Twist or TwistStamped), joint
targets (sensor_msgs/JointState positions, a column per joint), or the step a VLA head was given
(vlm_ros_msgs/StepCommand: the index of its command, the skill and its target as in 'pick red
block', among the recording's commands in order of first use; a step without a target is its
skill alone). The topic is named by the user; nothing is guessed. A message with a value that
is not finite (NaN or inf: one bad command among thousands) is left out and counted, as if not
recorded; one whose columns differ from the others' is refused (which layout would be meant?).
"""

import math
from dataclasses import dataclass, field

import numpy as np

from ..bag.storage import BagError
from ..bag.topics import describe_topics
from .messages import read_messages

TWIST = ('linear.x', 'linear.y', 'linear.z', 'angular.x', 'angular.y', 'angular.z')
ACTION_TYPES = ('geometry_msgs/msg/Twist', 'geometry_msgs/msg/TwistStamped',
                'sensor_msgs/msg/JointState', 'vlm_ros_msgs/msg/StepCommand')


@dataclass
class Actions:
    """One action topic's messages: log times, vectors (N x A) and what each column is."""

    topic: str
    msgtype: str
    log_ns: list = field(default_factory=list)
    vectors: list = field(default_factory=list)
    names: tuple = ()  # per column; StepCommand: ('skill',), with skills the commands
    skills: list = field(default_factory=list)
    not_finite: int = 0  # messages left out: a value NaN or inf


def _twist(msg) -> list:
    return [msg.linear.x, msg.linear.y, msg.linear.z, msg.angular.x, msg.angular.y,
            msg.angular.z]


def read_actions(reader, topic: str) -> Actions:
    """Read the action topic of a recording; BagError naming the topics where it cannot be."""
    info = reader.topics.get(topic)
    if info is None or info.msgtype not in ACTION_TYPES:
        found = 'is not in' if info is None else f'is a {info.msgtype} topic in'
        raise BagError(f'--actions {topic} {found} {reader.paths[0]}; need one of '
                       f'{", ".join(ACTION_TYPES)}. Topics: {describe_topics(reader)}')
    actions = Actions(topic, info.msgtype)
    for _, log_ns, msg in read_messages(reader, [c for c in reader.connections
                                                 if c.topic == topic]):
        try:
            vector, names = _vector(msg, info.msgtype, actions)
        except ValueError as exc:
            raise BagError(f'{topic}: message at {log_ns} ns {exc}; one action layout a '
                           'dataset') from None
        if actions.names and names != actions.names:
            raise BagError(f'{topic}: message at {log_ns} ns has columns {", ".join(names)}, '
                           f'the first had {", ".join(actions.names)}; one action layout a '
                           'dataset')
        actions.names = names
        if not all(math.isfinite(value) for value in vector):
            actions.not_finite += 1
            continue
        actions.log_ns.append(log_ns)
        actions.vectors.append(vector)
    return actions


def _vector(msg, msgtype: str, actions: Actions) -> tuple:
    """Return (the message's numbers, their column names)."""
    if msgtype == 'geometry_msgs/msg/Twist':
        return _twist(msg), TWIST
    if msgtype == 'geometry_msgs/msg/TwistStamped':
        return _twist(msg.twist), TWIST
    if msgtype == 'sensor_msgs/msg/JointState':
        return _joint_positions(msg)
    command = f'{msg.skill} {msg.target}'.strip()  # action_head splits it at the first space
    if command not in actions.skills:
        actions.skills.append(command)
    return [float(actions.skills.index(command))], ('skill',)


def _joint_positions(msg) -> tuple:
    """Return a JointState's positions and their joints (position_0... where it names none)."""
    positions = [float(v) for v in msg.position]
    if not positions:
        raise ValueError('has no joint positions (only velocities or efforts?)')
    names = tuple(msg.name) or tuple(f'position_{index}' for index in range(len(positions)))
    if len(names) != len(positions):
        raise ValueError(f'names {len(names)} joints and gives {len(positions)} positions')
    return positions, names


def action_after(actions: Actions, log_ns: int, window_ns: int):
    """Return the index of the first action logged at or after log_ns within window_ns."""
    times = np.asarray(actions.log_ns, dtype=np.int64)
    index = int(np.searchsorted(times, log_ns, side='left'))
    if index < len(times) and times[index] - log_ns <= window_ns:
        return index
    return None
