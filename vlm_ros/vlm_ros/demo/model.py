"""Build the demo's offline model: a tiny LLaVA trained on the sample recording's references.

``MODEL=tiny ./scripts/demo`` must run where no model hub is reachable. A random tiny model
answers gibberish, so this one is trained with the VLM objective (cross-entropy on the target
tokens) on references.yaml: each reference's frame is read from the bag by its stamp, the prompt
is rendered from the same templates the node uses, and the target is the reference answer. The
node then reproduces the reference plans when the recording is replayed into it. For the closed
loop (execute_plans with scripted_vla_head), each plan of two or more steps also teaches its
re-plan after the second step failed: the plan's rest, from the step that failed.

    python -m vlm_ros.demo.model OUT_DIR --bag samples/tabletop/bag \
        --references samples/tabletop/references.yaml
"""

import argparse
import json
import pathlib
import sys

from ..bag.arguments import print_line, reported
from ..bag.storage import open_bag
from ..engine.prompts import load_templates, render_task
from ..eval.inputs import decode_frames, frames_by_stamp, read_inputs
from ..eval.references import load_references, reference_frames
from ..models import build_tiny, train_tiny

FAMILY = 'llava'


def training_samples(bag, references_path) -> list:
    """Return (image, prompt, target) triples of the references, frames read from the bag."""
    entries = load_references(references_path)
    templates = load_templates()
    with open_bag(bag) as reader:
        inputs = read_inputs(reader)
        frames = reference_frames(entries, frames_by_stamp(inputs.frames), inputs.image_topic)
        images = decode_frames(reader, inputs, [frame.index for frame in frames])
    samples = []
    for entry, frame in zip(entries, frames, strict=True):
        image = images[frame.index]
        samples.append((image, render_task(templates, entry['task'], entry['text']),
                        entry['target']))
        steps = _steps(entry)
        if len(steps) >= 2:
            context = {'done': steps[0]['instruction'], 'failed': steps[1]['instruction']}
            samples.append((image, render_task(templates, 'replan', entry['text'], context),
                            json.dumps({'steps': steps[1:]})))
    return samples


def _steps(entry: dict) -> list:
    """Return the steps of a plan reference's JSON target ([] for other tasks)."""
    if entry['task'] != 'plan':
        return []
    try:
        return list(json.loads(entry['target']).get('steps', []))
    except (ValueError, AttributeError):
        return []


def build(out_dir, bag, references) -> dict:
    """Build and train the model into out_dir; return the training report."""
    samples = training_samples(bag, references)
    build_tiny(FAMILY, out_dir)
    return train_tiny(out_dir, samples)


def main(argv=None) -> int:
    """Console entry: python -m vlm_ros.demo.model OUT_DIR."""
    parser = argparse.ArgumentParser(prog='python -m vlm_ros.demo.model', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('out', help='directory for the checkpoint (must not exist)')
    parser.add_argument('--bag', required=True, help='recording with the reference frames')
    parser.add_argument('--references', required=True, help='YAML/JSONL references file')
    args = parser.parse_args(argv)
    if pathlib.Path(args.out).exists():
        parser.error(f'{args.out} exists already')
    # A recording or references file that cannot be read: one line naming it (scripts/demo's
    # BAG and REFERENCES), not a traceback.
    code, report = reported(parser.prog, lambda: build(args.out, args.bag, args.references))
    if code:
        return code
    print_line(f'demo model: tiny {FAMILY} in {args.out}, {report["steps"]} steps, loss '
               f'{report["initial_loss"]:.3f} -> {report["loss"]:.4f}, '
               f'{report["seconds"]:.1f} s')
    return 0 if report['min_answer_prob'] >= 0.5 else 1


if __name__ == '__main__':
    sys.exit(main())
