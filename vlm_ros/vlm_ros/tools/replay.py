"""vlm_replay: play a recording (rosbag2 or ROS 1) into the live ROS graph, record the answers.

vlm_replay BAG [--topics T ...] [--remap FROM:=TO ...] [--rate R] [--start S] [--loop]
               [--record OUT [--record-topics plan caption ... image_sources]] [--echo]
               [--instructions FILE | --instruction TEXT [--every N | --at S]]

``ros2 bag play`` cannot be installed from wheels, and teams judge a perception-planning node
by replaying what their robot saw. Messages are published as the recorded serialized bytes, so
any type in the bag replays without being decoded (its Python package must be installed),
on the recording's own timing scaled by --rate; a ROS 1 bag's messages are converted to CDR.
A recording without instructions gets them from --instructions or --instruction, published on
`instruction` at their bag times. With --record, the node's answers are written
into a new MCAP bag while the recording plays, and playback ends once every replayed
instruction has its Plan (or --linger seconds have passed).
"""

import argparse
import sys

from ..bag.arguments import ArgumentParser, not_negative, positive
from ..bag.instructions import add_instruction_args, check_instruction_args
from ..bag.player import Replay
from ..bag.recorder import RECORD_TOPICS
from ..bag.storage import READABLE, STORAGES
from ..engine import VlmError
from ..spin import spin_main

MIN_RATE = 0.001
RECORD_DEFAULTS = {'record_topics': list(RECORD_TOPICS), 'storage': 'mcap', 'linger': 30.0}


def parse_args(argv):
    """Parse the command line (ROS arguments removed)."""
    parser = ArgumentParser(prog='vlm_replay', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help=READABLE)
    parser.add_argument('--topics', nargs='+', default=[], help='play only these topics')
    parser.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                        help='publish a recorded topic under another name')
    parser.add_argument('--rate', type=positive, default=1.0,
                        help='speed factor of the recorded timing (default 1.0)')
    parser.add_argument('--start', type=not_negative, default=0.0,
                        help='skip the first START seconds of the recording')
    parser.add_argument('--loop', action='store_true', help='play again until interrupted')
    parser.add_argument('--no-progress', dest='progress', action='store_false',
                        help='no progress bar (it is drawn only on a terminal anyway)')
    parser.add_argument('--wait-for-subscribers', type=not_negative, default=5.0,
                        metavar='SECONDS', help='wait up to this long before playing for '
                        "vlm_node's inputs among the played topics (instructions, a camera; "
                        'else every topic) to have a subscriber, and with --record for the '
                        'recorded topics to have a publisher (default 5; 0 plays at once, '
                        'warning of the inputs nobody subscribes to yet)')
    parser.add_argument('--clock', type=positive, nargs='?', const=40.0, metavar='HZ',
                        help='publish the bag time on /clock (default 40 Hz) for nodes '
                        'started with use_sim_time:=true')
    parser.add_argument('--record', metavar='OUT', help='record answers into a new bag OUT')
    parser.add_argument('--record-topics', nargs='+',
                        help=f'topics to record (default: {" ".join(RECORD_TOPICS)}); '
                        'vlm_eval --recorded reads the boxes and cameras from the last two')
    parser.add_argument('--storage', choices=sorted(STORAGES),
                        help='storage of the recorded bag (default mcap)')
    parser.add_argument('--linger', type=not_negative, metavar='SECONDS',
                        help='with --record: wait up to this long after playback for a Plan '
                        'per replayed instruction (default 30)')
    parser.add_argument('--echo', action='store_true',
                        help='print recorded plans and captions as they arrive')
    add_instruction_args(parser)
    parser.add_argument('--image-topic', help='with --instruction: the camera topic whose '
                        'frames it is asked at (default: found as vlm_eval finds it)')
    args = parser.parse_args(argv)
    check_instruction_args(parser, args)
    if args.rate < MIN_RATE:  # a deadline further away than a wait can take
        parser.error(f'--rate must be >= {MIN_RATE:g}, got {args.rate:g}')
    if args.image_topic is not None and (args.instruction is None or args.at is not None):
        parser.error('--image-topic goes with --instruction TEXT (asked at its frames)')
    recording = {'--record-topics': args.record_topics, '--storage': args.storage,
                 '--linger': args.linger, '--echo': args.echo or None}
    if args.record is None and any(v is not None for v in recording.values()):
        parser.error(f'{", ".join(o for o, v in recording.items() if v is not None)} '
                     'go with --record OUT')
    for option, default in RECORD_DEFAULTS.items():
        if getattr(args, option) is None:
            setattr(args, option, default)
    return args


def main(argv=None) -> int:
    """Console script vlm_replay.

    Only what follows --ros-args reaches rclpy: rcl would otherwise take our FROM:=TO remaps
    for its own (deprecated) global remapping syntax and rename the tool's topics.
    """
    argv = sys.argv if argv is None else argv
    split = argv.index('--ros-args') if '--ros-args' in argv else len(argv)
    args = parse_args(argv[1:split])
    try:
        return spin_main(lambda: Replay(args), args=[argv[0], *argv[split:]])
    except VlmError as exc:  # bad input: the recording, an option, an instructions file
        print(f'vlm_replay: {exc}', file=sys.stderr)
        return exc.exit_code


if __name__ == '__main__':
    sys.exit(main())
