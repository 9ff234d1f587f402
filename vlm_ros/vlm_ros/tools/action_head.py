"""vlm_action_head: the reference action head as a node, closing the loop from features to actions.

    vlm_action_head --ros-args -p head:=head.pt

It subscribes to vlm_node's features (`vlm_node/features`: publish_features with each plan, or
features_rate for a head that acts faster than plans change) and publishes on `action` the
first action of the chunk its head (vlm_train_head) predicts, as the message type the head was
trained on: geometry_msgs/Twist or TwistStamped, sensor_msgs/JointState (the training set's
joints) or vlm_ros_msgs/StepCommand (the skill and its target; the instruction is the
features'). The header of a stamped action is the features' (their source image's). Features
made otherwise than the head's were (another layer, pooling or size, or of images processed at
another max_image_side or with other processor_kwargs), or without values (problem), are
skipped with a throttled warning: a head's output on them would be noise. Features of a
model by another name than the head file's are acted on, with a warning naming both.
"""

import json
import sys
import threading

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped, Vector3
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState

from vlm_ros_msgs.msg import Features, StepCommand

from ..engine import VlmError
from ..engine.config import parse_processor_kwargs
from ..spin import ros_arguments_only, spin_main

FEATURES_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                          reliability=ReliabilityPolicy.RELIABLE)  # as vlm_node publishes them


def feature_values(msg: Features) -> np.ndarray:
    """Return a Features message's values as float32 (from data, or data16's bit patterns)."""
    if msg.dtype == 'float32':
        return np.asarray(msg.data, dtype=np.float32)
    words = np.asarray(msg.data16, dtype=np.uint16)
    if msg.dtype == 'float16':
        return words.view(np.float16).astype(np.float32)
    if msg.dtype == 'bfloat16':
        return (words.astype(np.uint32) << 16).view(np.float32)
    raise ValueError(f'unknown dtype {msg.dtype[:20]!r}')


def _twist(values: list) -> Twist:
    return Twist(linear=Vector3(x=values[0], y=values[1], z=values[2]),
                 angular=Vector3(x=values[3], y=values[4], z=values[5]))


# The action message of each action type a dataset can have: built from (features, action).
OUTPUTS = {
    'geometry_msgs/msg/Twist': (Twist, lambda msg, action, head: _twist(action)),
    'geometry_msgs/msg/TwistStamped': (TwistStamped, lambda msg, action, head: TwistStamped(
        header=msg.header, twist=_twist(action))),
    'sensor_msgs/msg/JointState': (JointState, lambda msg, action, head: JointState(
        header=msg.header, name=head.columns, position=action)),
    'vlm_ros_msgs/msg/StepCommand': (StepCommand, lambda msg, action, head: StepCommand(
        header=msg.header, plan_id=msg.request_id, index=0, count=1,
        instruction=msg.instruction, skill=action.partition(' ')[0],
        target=action.partition(' ')[2])),
}


def processing(msg: Features) -> tuple:
    """Return (max_image_side, processor kwargs) of msg.processor; ValueError if unreadable."""
    try:
        said = json.loads(msg.processor)
        kwargs = said['processor_kwargs']  # the node's parameter, read as the node reads it
        return said['max_image_side'], parse_processor_kwargs(kwargs) if kwargs.strip() else {}
    except (VlmError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ValueError(f'the features do not say how their images were processed '
                         f'(processor {msg.processor[:200]!r}: {exc!r})') from None


def mismatch(msg: Features, head, size: int) -> str:
    """Say how msg's features differ from those the head was trained on, or ''."""
    source = head.source

    def layer(index: int) -> int:  # -1 and layers - 1 are the same hidden state
        return index + msg.layers if index < 0 else index
    if msg.problem:
        return f'the features have no values: {msg.problem}'
    if layer(msg.layer) != layer(source['layer']) or msg.pooling != source['pooling']:
        return (f'features of layer {msg.layer}, pooling {msg.pooling}; the head was trained '
                f'on layer {source["layer"]}, pooling {source["pooling"]}')
    made = processing(msg)
    trained = (source['max_image_side'], source['processor_kwargs'])
    if made != trained:  # other pixels in, other hidden states out
        return (f'features of images at max_image_side {made[0]}, processor_kwargs '
                f'{json.dumps(made[1])}; the head was trained on max_image_side {trained[0]}, '
                f'processor_kwargs {json.dumps(trained[1])}')
    if size != head.net.inputs:
        return f'{size} values; the head takes {head.net.inputs}'
    return ''


def act_on(msg: Features, head) -> tuple:
    """Return (the head's first action for msg's features, '') or (None, why there is none)."""
    try:  # anything on the DDS domain can publish here
        values = feature_values(msg)
        wrong = mismatch(msg, head, values.size)
        if not wrong and not np.isfinite(values).all():
            wrong = 'features that are not finite'
        return (None, wrong) if wrong else (head.act(values)[0], '')
    except ValueError as exc:
        return None, str(exc)


class ActionHeadNode(Node):
    """Publish the head's action for each Features message that matches its training."""

    def __init__(self):
        super().__init__('vlm_action_head')
        self.done, self.code = threading.Event(), 0
        self.declare_parameter('head', '', ParameterDescriptor(
            description='the head file vlm_train_head wrote', read_only=True))
        path = self.get_parameter('head').value
        from ..head import training  # torch: once the node is up, as vlm_node loads its model

        try:
            if not path:
                raise VlmError('bad_input', 'no head: -p head:=FILE (vlm_train_head writes one)')
            self._head = training.load(path)
            msg_type, self._build = OUTPUTS[self._head.action_type]
        except (VlmError, KeyError) as exc:
            print(f'vlm_action_head: error: {exc}', file=sys.stderr, flush=True)
            self.code = 2
            self.done.set()
            return
        self._model_told = ''
        self._pub = self.create_publisher(msg_type, 'action', 10)
        self.create_subscription(Features, 'vlm_node/features', self._on_features, FEATURES_QOS)
        self.get_logger().info(f'{path}: {self._head.kind} head of {self._head.action_type}, '
                               f'features of {self._head.source["model"]}')

    def _on_features(self, msg: Features) -> None:
        action, wrong = act_on(msg, self._head)
        if wrong:
            self.get_logger().warning(f'no action: {wrong}', throttle_duration_sec=5.0)
            return
        self._say_model(msg.model)
        self._pub.publish(self._build(msg, action, self._head))

    def _say_model(self, model: str) -> None:
        """Warn once per change (every 5 s at most) when features name another model.

        Not refused: the same weights go by other names (a hub id, a folder, a link), and act
        alike. Other weights of the same size would give actions of features the head never
        saw, so the user is told which two models it is (the last name told is kept: anything
        on the DDS domain can publish here, so no set of names grows).
        """
        trained = self._head.source['model']
        if model in (trained, self._model_told):
            return
        said = self.get_logger().warning(
            f'acting on features of model {model[:200]}; the head was trained on features of '
            f'{trained}: if these are not the same weights, export and train again with '
            f'vlm_export --model {model[:200]}', throttle_duration_sec=5.0)  # names may alternate
        if said:  # one held back by the throttle is said at the next message
            self._model_told = model


def main(args=None) -> None:
    """Console script vlm_action_head (exit 0 on SIGINT/SIGTERM, 2 without a usable head)."""
    refused = ros_arguments_only(__doc__, ('head',), args)
    sys.exit(refused if refused is not None else spin_main(ActionHeadNode, args))


if __name__ == '__main__':
    main()
