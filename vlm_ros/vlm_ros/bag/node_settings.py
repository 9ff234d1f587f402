"""The parameters of the node whose answers are recorded, stored beside the recording.

Latencies and plans mean little without the settings that produced them (model, device,
max_new_tokens, caption_rate ...), and the answers themselves carry only the model. So
vlm_replay --record asks the node that publishes the recorded Plan topic for all of its
parameters, through the standard rcl_interfaces services every node has (what
``ros2 param dump`` asks), and writes them as settings.json into the recorded bag's directory,
where vlm_eval --recorded finds them. rosbag2 readers ignore files they do not list.
The answering node is a peer on the DDS domain like any other: its answer is bounded.
"""

import json
import math
import pathlib
import threading
import time
from typing import Optional

from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.parameter import parameter_value_to_python

from .storage import BagError

SETTINGS_FILE = 'settings.json'
MAX_PARAMETERS = 1000  # a node with more is not one of ours; the rest is left out
MAX_VALUE_CHARS = 10_000  # of one string value (a prompt template is far shorter)
UNKNOWN = '_NODE_NAME_UNKNOWN_'  # rclpy's name of a node discovery has not named yet


def _plain(value):
    """Return a parameter value as JSON can hold it, strings and arrays cut to bounds."""
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float)) or value is None:
        return value
    return [_plain(item) for item in list(value)[:MAX_PARAMETERS]]


def _call(node, srv_type, name: str, request, deadline: float, stop: threading.Event):
    """Call a service from a thread other than the executor's; BagError when no answer came."""
    client = node.create_client(srv_type, name)
    try:
        while not client.wait_for_service(timeout_sec=0.1):
            if stop.is_set() or time.monotonic() > deadline:
                raise BagError(f'no service {name}')
        future = client.call_async(request)
        answered = threading.Event()
        future.add_done_callback(lambda _: answered.set())
        while not answered.wait(0.1):
            if stop.is_set() or time.monotonic() > deadline:
                future.cancel()
                raise BagError(f'{name} did not answer')
        return future.result()
    finally:
        node.destroy_client(client)


def fetch_parameters(node, target: str, timeout: float, stop: threading.Event) -> dict:
    """Return {name: value} of every parameter of the node named target ('/ns/name')."""
    deadline = time.monotonic() + timeout
    listed = _call(node, ListParameters, f'{target}/list_parameters', ListParameters.Request(),
                   deadline, stop)
    names = sorted(set(listed.result.names))[:MAX_PARAMETERS]
    got = _call(node, GetParameters, f'{target}/get_parameters',
                GetParameters.Request(names=names), deadline, stop)
    if len(got.values) != len(names):
        raise BagError(f'{target}/get_parameters answered {len(got.values)} values for '
                       f'{len(names)} names')
    return {name: _plain(parameter_value_to_python(value))
            for name, value in zip(names, got.values, strict=True)}


def _publisher(node, topic: str, deadline: float, stop: threading.Event) -> str:
    """Return the name ('/ns/name') of the one node publishing topic, once discovery names it.

    DDS discovers a publisher before the ROS graph information that names its node: until
    then rclpy calls it _NODE_NAME_UNKNOWN_, for a node that was running before vlm_replay
    started as much as for one that starts later.
    """
    while True:
        publishers = {f'{i.node_namespace.rstrip("/")}/{i.node_name}'
                      for i in node.get_publishers_info_by_topic(topic)}
        named = len(publishers) == 1 and UNKNOWN not in next(iter(publishers))
        if named or stop.is_set() or time.monotonic() > deadline:
            break
        stop.wait(0.05)
    if len(publishers) != 1:
        raise BagError(f'{len(publishers)} nodes publish {topic} '
                       f'({", ".join(sorted(publishers)) or "none"}); settings need one')
    if not named:
        raise BagError(f'the node publishing {topic} was not named by discovery in time')
    return publishers.pop()


def record_settings(node, topic: str, directory, stop: threading.Event,
                    timeout: float = 5.0) -> str:
    """Write the parameters of the node publishing topic into directory/settings.json.

    Returns the node's name; BagError says why nothing was written (no or several publishers,
    no answer within timeout seconds).
    """
    deadline = time.monotonic() + timeout
    target = _publisher(node, topic, deadline, stop)
    parameters = fetch_parameters(node, target, deadline - time.monotonic(), stop)
    path = pathlib.Path(directory) / SETTINGS_FILE
    # Written beside and renamed into place: whoever finds the file finds all of it.
    partial = path.with_name(f'.{SETTINGS_FILE}.partial')
    partial.write_text(json.dumps({'node': target, 'parameters': parameters}, indent=1) + '\n',
                       encoding='utf-8')
    partial.replace(path)
    return target


def read_settings(bag) -> Optional[dict]:
    """Return the settings recorded beside the bag at path bag, or None when there are none."""
    path = pathlib.Path(bag)
    path = path / SETTINGS_FILE if path.is_dir() else path.parent / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError) as exc:
        raise BagError(f'cannot read {path}: {exc}', exc) from exc
    if not isinstance(settings, dict) or not isinstance(settings.get('parameters'), dict):
        raise BagError(f'{path} holds no {{"node": ..., "parameters": {{...}}}} object')
    return settings
