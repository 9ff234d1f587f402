"""A node set by its parameters answers its own command line before rclpy starts.

rcl reads a bare NAME:=VALUE as a remap (deprecated syntax) and rclpy ignores anything else,
so a forgotten ``--ros-args -p`` started the node with its defaults, without a word.
"""

import pytest
from vlm_ros.spin import ros_arguments_only

PARAMETERS = ('model', 'device')


@pytest.mark.parametrize('argv', [
    ['vlm_node'],
    ['vlm_node', '--ros-args', '-p', 'model:=/m', '-r', 'image:=/cam'],
    ['vlm_node', 'image:=/cam'],  # a remap in the deprecated syntax: rcl's, which warns
    ['vlm_node', '--ros-args', '-p'],  # rclpy.init says why it cannot read this
], ids=['none', 'ros-arguments', 'bare-remap', 'malformed'])
def test_ros_arguments_alone_start_the_node(argv, capsys):
    assert ros_arguments_only('about', PARAMETERS, argv) is None
    assert capsys.readouterr() == ('', '')


@pytest.mark.parametrize(('argv', 'says'), [
    (['vlm_node', 'model:=/m'], "vlm_node: 'model:=/m' is not a ROS argument, and vlm_node "
     'takes no other: a parameter goes after --ros-args, vlm_node --ros-args -p model:=/m'),
    (['vlm_node', '--ros-args', '-r', 'image:=/c', '--', 'device:=cpu'],
     'vlm_node --ros-args -p device:=cpu'),
    (['vlm_node', 'use_sim_time:=true'], 'vlm_node --ros-args -p use_sim_time:=true'),
    (['vlm_node', '--ros-args', '-p', 'model:=/m', '--', 'now'],
     "vlm_node: 'now' is not a ROS argument, and vlm_node takes no other (--help says what "
     'it takes)'),
], ids=['parameter', 'after-ros-arguments', 'ros-parameter', 'word'])
def test_anything_else_is_refused_with_the_way_to_write_it(argv, says, capsys):
    assert ros_arguments_only('about', PARAMETERS, argv) == 2
    out, err = capsys.readouterr()
    assert out == '' and says in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize('flag', ['-h', '--help'])
def test_help_prints_the_usage_and_what_the_node_does(flag, capsys):
    assert ros_arguments_only('  What it does.\n', PARAMETERS, ['/bin/vlm_node', flag]) == 0
    assert capsys.readouterr().out == ('usage: vlm_node [--ros-args -p NAME:=VALUE ... '
                                       '--params-file FILE ...]\n\nWhat it does.\n')
