"""The reacting tabletop as a ROS 2 node: a head's commands over DDS, its success rate at the end.

    python -m vlm_ros.demo.world_node [--episodes 30] [--seed 1] [--max-decisions 6]
        [--rate 10] [--episode-timeout 30] [--json FILE] [--ros-args ...]

The robot side of the loop with a learned head: the node publishes the drawn state on `image`
(rgb8, 320x240) at --rate and each episode's instruction on `instruction`, and takes
StepCommands on `action`, from vlm_action_head fed by vlm_node's features_rate. A command
counts only if it answers the episode's instruction and was made from a frame of the current
state (its header stamp no older than the state's first frame), so a head is never credited
with, or blamed for, what it decided on a frame of before. It plays head_trial's episodes and
prints the same table; the process ends with them (exit 0), or on a signal.
"""

import argparse
import json
import pathlib
import sys
import threading

from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vlm_ros_msgs.msg import StepCommand

from ..bag.arguments import positive, positive_int, print_line
from ..node.image_conversion import rgb_to_image
from ..node.topics import INSTRUCTIONS_QOS
from ..spin import spin_main
from .head_trial import Trial, format_trials, starts
from .world import FRAME_ID, SIZE, episodes


def decided_since(stamp, since_ns: int) -> bool:
    """Tell whether a command stamped stamp was decided on a frame taken since since_ns.

    In integers: rclpy's Time refuses a negative stamp with ValueError, which would end the
    node, and anything on the DDS domain can publish on `action`.
    """
    return stamp.sec * 1_000_000_000 + stamp.nanosec >= since_ns


class WorldNode(Node):
    """Play episodes of the reacting tabletop with the commands that arrive on `action`."""

    def __init__(self, args: argparse.Namespace):
        super().__init__('tabletop_world')
        self.done, self.code = threading.Event(), 0
        self._args = args
        self._episodes = episodes(args.episodes, args.seed)
        self._lock = threading.Lock()
        self._index = -1
        self._world = self._task = self._since = self._started = self._frame = None
        self._decisions, self._outcomes = 0, []  # (fulfilled, decisions) per episode
        self._image = self.create_publisher(Image, 'image', 10)
        self._instruction = self.create_publisher(String, 'instruction', INSTRUCTIONS_QOS)
        self._action = self.create_subscription(StepCommand, 'action', self._on_action, 10)
        self.create_timer(1.0 / args.rate, self._tick)

    def _tick(self) -> None:
        """Publish the state's frame; start the next episode once everything listens."""
        with self._lock:
            now = self.get_clock().now()
            if self._world is None and not self._start(now):
                return
            if (now - self._started).nanoseconds > self._args.episode_timeout * 1e9:
                self._end()
                return
            if self._since is None:  # the state's first frame: drawn once, then sent again
                self._since = now.nanoseconds
                self._frame = rgb_to_image(self._world.draw(*SIZE))
                self._frame.header.frame_id = FRAME_ID
            self._frame.header.stamp = now.to_msg()
            self._image.publish(self._frame)

    def _start(self, now: Time) -> bool:
        listening = (self._image.get_subscription_count() and
                     self._instruction.get_subscription_count() and
                     self._action.get_publisher_count())
        if not listening or self.done.is_set():
            return False
        self._index += 1
        self._task, start = self._episodes[self._index]
        self._world = start.copy()
        self._since, self._started, self._decisions = None, now, 0
        self._instruction.publish(String(data=self._task.text))
        return True

    def _on_action(self, msg: StepCommand) -> None:
        with self._lock:
            if self._world is None or msg.instruction != self._task.text or \
                    self._since is None or not decided_since(msg.header.stamp, self._since):
                return  # another episode's, or decided on a frame of an earlier state
            self._world.apply(msg.skill, msg.target)
            self._decisions += 1
            self._since = None  # the next frame shows the new state
            if self._world.done(self._task) or self._decisions >= self._args.max_decisions:
                self._end()

    def _end(self) -> None:
        self._outcomes.append((self._world.done(self._task), self._decisions))
        self._world = None
        if len(self._outcomes) == len(self._episodes):
            self._finish()

    def _finish(self) -> None:
        fulfilled, decisions = zip(*self._outcomes, strict=True)
        trial = Trial('learned, over DDS', fulfilled, decisions, starts(self._episodes))
        print_line(format_trials([trial], self._args.max_decisions))
        if self._args.json:
            self._args.json.write_text(json.dumps(trial.record(), indent=2) + '\n',
                                       encoding='utf-8')
        self.done.set()


def parse_args(argv):
    """Parse the command line (ROS arguments after --ros-args are rclpy's)."""
    parser = argparse.ArgumentParser(prog='python -m vlm_ros.demo.world_node',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--episodes', type=positive_int, default=30)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--max-decisions', type=positive_int, default=6)
    parser.add_argument('--rate', type=positive, default=10.0, help='frames a second')
    parser.add_argument('--episode-timeout', type=positive, default=30.0,
                        help='seconds an episode may take (then it failed)')
    parser.add_argument('--json', type=pathlib.Path, help='also write the trial here')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    """Run the episodes; exit 0 once they are played (or on a signal)."""
    argv = sys.argv[1:] if argv is None else argv
    ours, ros = (argv[:argv.index('--ros-args')], argv[argv.index('--ros-args'):]) \
        if '--ros-args' in argv else (argv, [])
    args = parse_args(ours)
    return spin_main(lambda: WorldNode(args), [sys.argv[0], *ros])


if __name__ == '__main__':
    sys.exit(main())
