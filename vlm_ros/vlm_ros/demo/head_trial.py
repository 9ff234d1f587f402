"""Heads tried in the reacting tabletop (world.py): how often each one fulfils its instruction.

    python -m vlm_ros.demo.head_trial HEAD [--model MODEL] [--episodes 30] [--seed 1]
        [--max-decisions 6] [--json FILE] [--device auto] [--dtype auto]

Every head gets the same episodes (an instruction and a starting state) and at most
``max_decisions`` commands an episode; an episode succeeds when the world fulfils its task
within them. The learned head (vlm_train_head's) sees what it would see on the robot: the
VLM's features of the frame drawn from the state and the instruction, made as vlm_export made
its training set's (the head file's layer, pooling and image side). The scripted head reads
the state itself (world.expert), and the random head picks any command the world knows. The head is
vlm_train_head's, trained on world_recording.py's recording through vlm_export
(docs/VLA.md walks through the whole loop).
"""

import argparse
import json
import pathlib
import random
import statistics
import sys
from dataclasses import asdict, dataclass

from ..bag.arguments import ArgumentParser, positive_int, print_line, reported
from ..engine import EngineConfig, Request, VlmError
from ..engine.config import DTYPES
from ..engine.features import FeatureSpec
from ..eval.dataset import features_data
from .world import COMMANDS, SIZE, episodes, expert


@dataclass(frozen=True)
class Trial:
    """One head's episodes: whether each was fulfilled, and the commands each spent."""

    head: str
    fulfilled: tuple  # per episode
    decisions: tuple  # per episode
    starts: tuple = ()  # per episode, each block's place at its start: the --seed's episodes

    @property
    def episodes(self) -> int:
        """Return how many episodes were played."""
        return len(self.fulfilled)

    @property
    def successes(self) -> int:
        """Return how many episodes' tasks were fulfilled."""
        return sum(self.fulfilled)

    @property
    def rate(self) -> float:
        """Return the share of episodes whose task was fulfilled."""
        return self.successes / self.episodes if self.episodes else 0.0

    def record(self) -> dict:
        """Return the trial as --json writes it: its fields, counts and rate."""
        return {**asdict(self), 'episodes': self.episodes, 'successes': self.successes,
                'rate': self.rate}


def run_episodes(name: str, choose, episodes: list, max_decisions: int) -> Trial:
    """Play each (task, World) with choose(world, task) -> (skill, target); return the Trial.

    The worlds are copied: every head starts from the same states.
    """
    fulfilled, spent = [], []
    for task, start in episodes:
        world = start.copy()
        decisions = 0
        while decisions < max_decisions and not world.done(task):
            world.apply(*choose(world, task))
            decisions += 1
        fulfilled.append(world.done(task))
        spent.append(decisions)
    return Trial(name, tuple(fulfilled), tuple(spent), starts(episodes))


def starts(episodes: list) -> tuple:
    """Return each episode's starting places of the blocks, as a Trial keeps them."""
    return tuple(dict(start.places) for _, start in episodes)


def learned_chooser(engine, head):
    """Return a chooser asking head what to do with the engine's features of each frame."""
    spec = FeatureSpec(head.source['layer'], head.source['pooling'])

    def choose(world, task) -> tuple:
        result = engine.run([Request('plan', world.draw(*SIZE), task.text, 1,
                                     features=spec)])[0]
        skill, _, target = head.act(features_data(result))[0].partition(' ')
        return skill, target
    return choose


def random_chooser(seed: int):
    """Return a chooser of any command of the world's, uniformly (seeded)."""
    rng = random.Random(seed)
    return lambda world, task: rng.choice(COMMANDS)


def format_trials(trials: list, max_decisions: int) -> str:
    """Render the trials as a Markdown table: success rate and commands spent per episode."""
    lines = [f'| head | episodes | fulfilled | success rate | commands an episode (at most '
             f'{max_decisions}) |', '|---|---:|---:|---:|---:|']
    lines += [f'| {t.head} | {t.episodes} | {t.successes} | {100 * t.rate:.0f}% | '
              f'{statistics.mean(t.decisions) if t.decisions else 0:.1f} |' for t in trials]
    return '\n'.join(lines)


def parse_args(argv):
    """Parse the command line."""
    parser = ArgumentParser(prog='python -m vlm_ros.demo.head_trial', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('head', help='a head file of vlm_train_head (StepCommands)')
    parser.add_argument('--model', help="the VLM of the features (default: the head's)")
    parser.add_argument('--episodes', type=positive_int, default=30)
    parser.add_argument('--seed', type=int, default=1, help='the starting states and the '
                        "random head's choices")
    parser.add_argument('--max-decisions', type=positive_int, default=6,
                        help='commands an episode may spend')
    parser.add_argument('--json', type=pathlib.Path, help='also write the trials here')
    parser.add_argument('--device', default='auto', help="as vlm_export's (auto, cpu, cuda)")
    parser.add_argument('--dtype', default='auto', choices=DTYPES)
    return parser.parse_args(argv)


def trial(args) -> tuple:
    """Run the three heads over the same episodes; return what made the features, and Trials."""
    from ..engine.local import VlmEngine  # torch: after the arguments are good
    from ..head import training

    head = training.load(args.head)
    if head.action_type != training.STEP_TYPE:
        raise VlmError('bad_input', f'{args.head} commands {head.action_type}; the tabletop '
                       f'takes {training.STEP_TYPE} (a head trained on its recording)')
    played = episodes(args.episodes, args.seed)
    engine = VlmEngine(EngineConfig(model=args.model or head.source['model'],
                                    device=args.device, dtype=args.dtype, max_new_tokens=1,
                                    max_image_side=head.source['max_image_side'],
                                    processor_kwargs=head.source['processor_kwargs']))
    engine.load()
    # Where the features came from, as the loaded model has it: --model, --device, --dtype.
    made = (f'features of {engine.config.model} on {engine.loaded.device} '
            f"({engine.loaded.dtype_name}), layer {head.source['layer']}, "
            f"{head.source['pooling']} pooling")
    try:
        trials = [run_episodes('learned', learned_chooser(engine, head), played,
                               args.max_decisions)]
    finally:
        engine.unload()
    trials += [run_episodes('scripted', expert, played, args.max_decisions),
               run_episodes('random', random_chooser(args.seed), played, args.max_decisions)]
    if args.json:
        args.json.write_text(json.dumps([t.record() for t in trials], indent=2) + '\n',
                             encoding='utf-8')
    return made, trials


def main(argv=None) -> int:
    """Print the trials' table, or the reason on stderr (exit 2: bad input)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    code, ran = reported('python -m vlm_ros.demo.head_trial', lambda: trial(args))
    if code:
        return code
    made, trials = ran
    print_line(f'{made}\n\n{format_trials(trials, args.max_decisions)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
