"""The robot's commands as action vectors (eval/actions.py): joints, steps, and what is refused."""

import numpy as np
import pytest
import vlm_ros.bag.storage as bags
from vlm_ros.eval.actions import action_after, read_actions


def write_bag(path, topic, msgtype, messages):
    with bags.bag_writer(path) as writer:
        connection = bags.add_topic(writer, topic, msgtype)
        for when, fields in messages:
            writer.write(connection, when, bags.serialize(msgtype, **fields))
    return path


def joints(when, names, positions):
    return when, {'header': bags.header(when, 'base'), 'name': names,
                  'position': np.asarray(positions, dtype=np.float64),
                  'velocity': np.zeros(0), 'effort': np.zeros(0)}


def step(when, skill):
    return when, {'header': bags.header(when, 'camera'), 'plan_id': 'p', 'index': 0,
                  'count': 1, 'instruction': f'{skill} it', 'skill': skill, 'target': 'it',
                  'attempt': 0}


def test_joint_positions_and_step_skills_become_columns(tmp_path):
    path = write_bag(tmp_path / 'joints', '/arm/command', 'sensor_msgs/msg/JointState',
                     [joints(10, ['a', 'b'], [0.5, -1.0]), joints(20, ['a', 'b'], [0.25, 1.5])])
    with bags.open_bag(path) as reader:
        actions = read_actions(reader, '/arm/command')
    assert actions.names == ('a', 'b') and actions.vectors == [[0.5, -1.0], [0.25, 1.5]]
    assert [action_after(actions, t, 5) for t in (5, 10, 11, 16, 21)] == [0, 0, None, 1, None]
    path = write_bag(tmp_path / 'steps', '/step', 'vlm_ros_msgs/msg/StepCommand',
                     [step(1, 'pick'), step(2, 'place'), step(3, 'pick')])
    with bags.open_bag(path) as reader:
        steps = read_actions(reader, '/step')
    assert steps.names == ('skill',) and steps.skills == ['pick it', 'place it']
    assert steps.vectors == [[0.0], [1.0], [0.0]]


def test_joint_commands_whose_joints_change_are_refused(tmp_path):
    path = write_bag(tmp_path / 'joints', '/arm/command', 'sensor_msgs/msg/JointState',
                     [joints(10, ['a', 'b'], [0.5, -1.0]), joints(20, ['b'], [0.25])])
    with bags.open_bag(path) as reader, pytest.raises(bags.BagError, match='one action layout'):
        read_actions(reader, '/arm/command')


@pytest.mark.parametrize('names, second, complaint', [
    ([], joints(20, [], [0.25]), 'has columns position_0, the first had position_0, position_1'),
    (['a', 'b'], joints(20, ['a', 'b'], [0.25]), 'names 2 joints and gives 1 positions'),
    (['a', 'b'], joints(20, ['a', 'b'], []), 'has no joint positions'),
], ids=['unnamed-count-changes', 'names-and-positions-differ', 'no-positions'])
def test_joint_commands_without_one_column_per_joint_are_refused(tmp_path, names, second,
                                                                 complaint):
    path = write_bag(tmp_path / 'joints', '/arm/command', 'sensor_msgs/msg/JointState',
                     [joints(10, names, [0.5, -1.0]), second])
    with bags.open_bag(path) as reader, pytest.raises(bags.BagError, match=complaint):
        read_actions(reader, '/arm/command')


def test_unnamed_joints_are_numbered_columns(tmp_path):
    path = write_bag(tmp_path / 'joints', '/arm/command', 'sensor_msgs/msg/JointState',
                     [joints(10, [], [0.5, -1.0])])
    with bags.open_bag(path) as reader:
        assert read_actions(reader, '/arm/command').names == ('position_0', 'position_1')


def twist(when, x):
    return when, {'linear': {'x': x, 'y': 0.0, 'z': 0.0},
                  'angular': {'x': 0.0, 'y': 0.0, 'z': 0.5}}


def test_commands_with_a_value_not_finite_are_left_out_and_counted(tmp_path):
    """One bad command among thousands: left out as if not recorded, and said, not refused.

    A frame before it is paired with the next good command within the window, and the set
    stays finite, as vlm_train_head needs it.
    """
    path = write_bag(tmp_path / 'twists', '/cmd_vel', 'geometry_msgs/msg/Twist',
                     [twist(10, 0.25), twist(20, np.nan), twist(30, -0.5), twist(40, np.inf)])
    with bags.open_bag(path) as reader:
        actions = read_actions(reader, '/cmd_vel')
    assert (actions.log_ns, actions.not_finite) == ([10, 30], 2)
    assert [vector[0] for vector in actions.vectors] == [0.25, -0.5]
    assert [action_after(actions, t, 15) for t in (15, 35)] == [1, None]
    path = write_bag(tmp_path / 'joints', '/arm/command', 'sensor_msgs/msg/JointState',
                     [joints(10, ['a', 'b'], [0.5, -np.inf]), joints(20, ['a', 'b'], [0.25, 1.5])])
    with bags.open_bag(path) as reader:
        actions = read_actions(reader, '/arm/command')
    assert (actions.vectors, actions.not_finite) == ([[0.25, 1.5]], 1)
