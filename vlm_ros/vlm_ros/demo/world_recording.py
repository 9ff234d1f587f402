"""A recording of the scripted head at work in the reacting tabletop, to train a learned head on.

Each episode: its instruction, then for every decision the frames of the state it was made in
and the scripted head's StepCommand just after the last of them, as a robot log would hold
them, so vlm_export pairs each frame with the command that followed it. Episodes are a second
apart and end with their last command, so no frame is paired across episodes.

    python -m vlm_ros.demo.world_recording OUT_BAG --episodes 60 --seed 0
"""

import argparse
import sys

from ..bag import storage as bags
from ..bag.arguments import print_line
from .sample import START_NS, image_fields
from .world import FRAME_ID, SIZE, episodes, expert

FRAME_NS = 100_000_000  # 10 Hz
TOPICS = {'image': '/camera/image_raw', 'instruction': '/instruction', 'step': '/step'}
STEP_TYPE = 'vlm_ros_msgs/msg/StepCommand'


def write_world_recording(path, episodes: list, frames_per_decision: int = 4,
                          storage: str = 'mcap') -> dict:
    """Write the scripted head's episodes (task, World) as a new rosbag2 at path.

    Returns {'episodes', 'decisions', 'frames'}. The worlds are played out (changed).
    """
    counts = dict.fromkeys(('episodes', 'decisions', 'frames'), 0)
    now = START_NS
    with bags.bag_writer(path, storage) as writer:
        image = bags.add_topic(writer, TOPICS['image'], bags.IMAGE_TYPES[0])
        text = bags.add_topic(writer, TOPICS['instruction'], bags.STRING_TYPE)
        step = bags.add_topic(writer, TOPICS['step'], STEP_TYPE)
        for episode, (task, world) in enumerate(episodes):
            writer.write(text, now, bags.serialize(bags.STRING_TYPE, data=task.text))
            index = 0
            while not world.done(task):
                rgb = world.draw(*SIZE)
                for _ in range(frames_per_decision):
                    now += FRAME_NS
                    writer.write(image, now, bags.serialize(bags.IMAGE_TYPES[0], **image_fields(
                        bags.header(now, FRAME_ID), rgb, 'rgb8')))
                    counts['frames'] += 1
                skill, target = expert(world, task)
                writer.write(step, now + FRAME_NS // 2, bags.serialize(
                    STEP_TYPE, header=bags.header(now, FRAME_ID), plan_id=f'episode-{episode}',
                    index=index, count=0, instruction=task.text, skill=skill, target=target,
                    attempt=0))
                world.apply(skill, target)
                index += 1
                counts['decisions'] += 1
            counts['episodes'] += 1
            now += 10 * FRAME_NS
    return counts


def main(argv=None) -> int:
    """Write the recording named on the command line."""
    parser = argparse.ArgumentParser(prog='python -m vlm_ros.demo.world_recording',
                                     description=__doc__.splitlines()[0])
    parser.add_argument('out', help='the new rosbag2 directory')
    parser.add_argument('--episodes', type=int, default=60)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)
    counts = write_world_recording(args.out, episodes(args.episodes, args.seed))
    print_line(f'{args.out}: ' + ', '.join(f'{count} {name}' for name, count in counts.items()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
