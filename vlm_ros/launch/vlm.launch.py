"""Start vlm_node: ros2 launch vlm_ros vlm.launch.py [model:=...] [image:=/camera/image_raw].

Parameters come from params_file (default config/vlm.yaml; presets: config/vlm_gpu.yaml,
config/vlm_remote.yaml). The model, device, backend, base_url, autostart and use_sim_time
arguments override it only when given: left empty, the params file decides. That is why this is
a Python launch file: XML cannot leave a parameter out when an argument is empty.

An argument this file does not declare fails the launch, naming the nearest one: launch itself
ignores it, so `modle:=DIR` would start the default model. A parent launch file that includes
this one with arguments of its own includes it inside GroupAction(scoped=True,
forwarding=False, launch_configurations={...}), so that only this file's arguments reach it.
"""

import difflib
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from rclpy.exceptions import InvalidNamespaceException, InvalidTopicNameException
from rclpy.validate_namespace import validate_namespace
from rclpy.validate_topic_name import validate_topic_name

# argument -> (parameter type, description); '' (the default) = as the params file says
OVERRIDES = {
    'model': (str, 'Hugging Face hub id or local save_pretrained directory'),
    'device': (str, 'auto, cpu, cuda or cuda:N'),
    'backend': (str, 'transformers (in this process) or openai (an OpenAI-compatible server)'),
    'base_url': (str, "openai backend: the server's API root, up to and including /v1"),
    'autostart': (bool, 'true: configure and activate at start-up; false: wait for a '
                        'lifecycle manager'),
    'use_sim_time': (bool, 'true: take time from /clock (replayed bags with --clock)'),
}
BOOLEANS = {'true': True, 'false': False}
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')
ARGUMENTS = ('namespace', 'params_file', *OVERRIDES, 'image', 'instruction', 'log_level')


def _check_arguments(given) -> None:
    """Raise naming every given launch argument that this file does not declare."""
    unknown = sorted(set(given) - set(ARGUMENTS))
    if not unknown:
        return

    def hint(name):
        near = difflib.get_close_matches(name, ARGUMENTS, n=1, cutoff=0.6)
        return f'{name!r} (did you mean {near[0]!r}?)' if near else repr(name)
    raise RuntimeError(f"vlm.launch.py has no argument {', '.join(map(hint, unknown))}; its "
                       f"arguments: {', '.join(ARGUMENTS)} (node parameters go in "
                       'params_file)')


def _check_values(value) -> None:
    """Raise naming every argument whose value would be dropped or end the node.

    launch_ros only warns about a params_file that is not a file and starts the node on its
    defaults (another model, no API key); rcl ends the node on a bad topic or log level.
    """
    problems = []
    if not os.path.isfile(value('params_file')):
        problems.append(f"params_file {value('params_file')!r} is not a file")
    if value('log_level').lower() not in LOG_LEVELS:
        problems.append(f"log_level must be one of {', '.join(LOG_LEVELS)}, got "
                        f"{value('log_level')!r}")
    checks = [('image', validate_topic_name, InvalidTopicNameException),
              ('instruction', validate_topic_name, InvalidTopicNameException)]
    if value('namespace'):
        checks.append(('namespace', lambda ns: validate_namespace('/' + ns.lstrip('/')),
                       InvalidNamespaceException))
    for name, validate, error in checks:
        try:
            validate(value(name))
        except error as exc:
            problems.append(f'{name} {value(name)!r}: {str(exc).splitlines()[0]}')
    if problems:
        raise ValueError(f"vlm.launch.py: {'; '.join(problems)}")


def _typed(name: str, kind: type, text: str):
    if kind is bool:
        if text.lower() not in BOOLEANS:
            raise ValueError(f'launch argument {name} must be true or false, got {text!r}')
        return BOOLEANS[text.lower()]
    return text


def _node(context):
    def value(name):
        return LaunchConfiguration(name).perform(context)

    _check_arguments(context.launch_configurations)
    _check_values(value)
    overrides = {name: _typed(name, kind, value(name))
                 for name, (kind, _) in OVERRIDES.items() if value(name) != ''}
    image = value('image')
    return [Node(
        package='vlm_ros', executable='vlm_node', name='vlm_node',
        namespace=value('namespace'), output='screen',
        parameters=[value('params_file'), overrides],
        remappings=[('image', image), ('image/compressed', f'{image}/compressed'),
                    ('instruction', value('instruction'))],
        arguments=['--ros-args', '--log-level', value('log_level')])]


def generate_launch_description():
    """Declare the arguments, then start the node with the overrides that were given."""
    default_params = PathJoinSubstitution([FindPackageShare('vlm_ros'), 'config', 'vlm.yaml'])
    return LaunchDescription([
        DeclareLaunchArgument('namespace', default_value='',
                              description='namespace of the node and its topics'),
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS params file (presets: config/vlm_gpu.yaml, '
                                          'config/vlm_remote.yaml)'),
        *(DeclareLaunchArgument(name, default_value='',
                                description=f"{text} ('' = as params_file says)")
          for name, (_, text) in OVERRIDES.items()),
        DeclareLaunchArgument('image', default_value='image',
                              description='camera topic (sensor_msgs/Image; image/compressed '
                                          'follows it)'),
        DeclareLaunchArgument('instruction', default_value='instruction',
                              description='instruction topic (std_msgs/String)'),
        DeclareLaunchArgument('log_level', default_value='info',
                              description='debug, info, warn, error or fatal'),
        OpaqueFunction(function=_node),
    ])
