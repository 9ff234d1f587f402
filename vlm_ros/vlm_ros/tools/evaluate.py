"""vlm_eval: evaluate a VLM offline on a recording (rosbag2 or ROS 1), without a ROS graph.

    vlm_eval BAG --model DIR_OR_HUB_ID [--out eval_out] [--batch-size 4] [--no-captions]
    vlm_eval BAG --recorded ANSWERS_BAG [--out DIR]         (answers of a live vlm_node)
    vlm_eval BAG --model M --references refs.yaml            (also cross-entropy of references)
    vlm_eval BAG --model M --instruction TEXT [--every N | --at S]   (a recording without
    vlm_eval BAG --model M --instructions FILE                         instructions)
    vlm_eval BAG --model M --camera head=TOPIC --camera wrist=TOPIC  (several cameras)

Every instruction in the bag is answered with the latest camera frame logged at or before it,
as the live node would have seen it, and every frame so used is also captioned. Writes
results.jsonl (one record per request and per reference), summary.json, latency.png and a
self-contained report.html into --out, and prints the summary table (with the CPU threads torch
computed with, as --cpu-threads set them, where a model ran). With --recorded the
answers are the live node's: options that would steer a model's are refused, not ignored.
"""

import argparse
import contextlib
import sys
from functools import partial

from ..bag import instructions
from ..bag.arguments import (
    ArgumentParser,
    not_negative,
    output_folder,
    positive_int,
    print_line,
    reported,
)
from ..bag.instructions import add_instruction_args, check_instruction_args
from ..bag.storage import READABLE, open_bag
from ..engine import VlmError
from ..eval.inputs import decode_frames, frames_by_stamp, read_inputs
from ..eval.offline import (
    Sync,
    other_frames,
    plan_requests,
    run_engine,
    score_references,
    write_outputs,
)
from ..eval.recorded import recorded_records
from ..eval.records import ANSWERED, format_table, summarize
from ..eval.references import load_references, reference_frames
from ..eval.report import boxes_by_frame, thumbnail_jpeg
from ..eval.settings import engine_settings
from ..node.params import BY_NAME
from .engine_args import add_engine_args, add_limit_arg, engine_config

# The live node's defaults: offline answers are comparable only under the same limits.
NODE_DEFAULTS = {name: BY_NAME[name].default for name in ('max_skew', 'wait_for_image')}
# (option, dest) of what steers only how a model answers, and of what loads and runs one: with
# --recorded the answers are the live node's, and a model runs only to score --references.
ANSWERING = (('--no-captions', 'captions'), ('--max-new-tokens', 'max_new_tokens'),
             ('--decode-mode', 'decode_mode'), ('--constrain-plans', 'constrain_plans'),
             ('--skills', 'skills'), ('--max-skew', 'max_skew'),
             ('--wait-for-image', 'wait_for_image'))
MODEL = (('--model', 'model'), ('--device', 'device'), ('--dtype', 'dtype'),
         ('--processor-kwargs', 'processor_kwargs'), ('--cpu-threads', 'cpu_threads'),
         ('--trust-remote-code', 'trust_remote_code'), ('--batch-size', 'batch_size'),
         ('--max-image-side', 'max_image_side'))


def camera_argument(text: str) -> tuple:
    """Parse --camera NAME=TOPIC into (name, topic)."""
    name, sep, topic = text.partition('=')
    if not (sep and name.strip() and topic.strip()):
        raise argparse.ArgumentTypeError(f'write NAME=TOPIC, e.g. wrist=/wrist/image_raw, '
                                         f'not {text!r}')
    return name.strip(), topic.strip()


def parse_args(argv):
    """Parse the command line; --model is needed unless --recorded answers without references."""
    parser = ArgumentParser(prog='vlm_eval', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help=f'the inputs: {READABLE}')
    parser.add_argument('--model', help='hub id or save_pretrained directory')
    parser.add_argument('--recorded', metavar='OUT_BAG',
                        help='take the answers from this recording of a live vlm_node instead '
                        'of running a model')
    parser.add_argument('--references', metavar='FILE',
                        help='YAML or JSONL list of {stamp_ns, task, text, target} to score')
    parser.add_argument('--image-topic', help='default: the one Image topic, else the one '
                        'CompressedImage topic')
    parser.add_argument('--camera', dest='cameras', action='append', type=camera_argument,
                        default=[], metavar='NAME=TOPIC',
                        help="one of several cameras (repeat; the first is the plan's image), as "
                        "vlm_node's cameras: each request gets a frame of each, each enters the "
                        'prompt after its name; in place of --image-topic')
    parser.add_argument('--max-skew', type=not_negative,
                        help="with --camera: seconds the frames' stamps may lie apart, as "
                        f"vlm_node's max_skew (0 = no limit; default {NODE_DEFAULTS['max_skew']})")
    parser.add_argument('--wait-for-image', type=not_negative,
                        help='with --camera: seconds after a request in which closer frames '
                        "are looked for, as vlm_node's wait_for_image (default "
                        f"{NODE_DEFAULTS['wait_for_image']})")
    parser.add_argument('--instruction-topic', help='default: the one std_msgs/String topic '
                        'named .../instruction')
    add_instruction_args(parser)
    parser.add_argument('--out', default='eval_out', help='output directory')
    parser.add_argument('--batch-size', type=positive_int, default=4)
    parser.add_argument('--no-captions', dest='captions', action='store_false',
                        help='skip captioning the frames the instructions used')
    add_engine_args(parser)
    add_limit_arg(parser, 'max_new_tokens')
    add_limit_arg(parser, 'max_image_side')
    args = parser.parse_args(argv)
    check_instruction_args(parser, args)
    if args.recorded:
        _check_recorded(parser, args)
    names = [name for name, _ in args.cameras]
    if len(set(names)) < len(names):
        parser.error(f'--camera names must differ: {", ".join(names)}')
    if not args.cameras and (args.max_skew, args.wait_for_image) != (None, None):
        parser.error('--max-skew and --wait-for-image go with --camera: one camera takes the '
                     'latest frame at or before each request')
    if args.max_skew is None:
        args.max_skew = NODE_DEFAULTS['max_skew']
    if args.wait_for_image is None:
        args.wait_for_image = NODE_DEFAULTS['wait_for_image']
    topics = [topic for _, topic in args.cameras]
    if len(set(topics)) < len(topics):
        parser.error(f'--camera topics must differ (one camera a topic): {", ".join(topics)}')
    if args.cameras and (args.image_topic or args.references):
        parser.error('--camera takes the place of --image-topic, and references are scored '
                     'on one camera: not with --image-topic or --references')
    if args.model is None and (args.recorded is None or args.references):
        parser.error('--model is required' + (' to score --references' if args.recorded
                                               else ' (or --recorded ANSWERS_BAG)'))
    return args


def _check_recorded(parser: argparse.ArgumentParser, args) -> None:
    """Refuse the options given with --recorded that would change nothing, naming them.

    A user who asks for --max-new-tokens 3 on a recording believes the report shows its
    effect; it would show the node's answers, made under the node's settings.
    """
    unused = ANSWERING + (() if args.references else MODEL)
    given = [option for option, dest in unused if getattr(args, dest) != parser.get_default(dest)]
    model = 'the model only scores --references' if args.references else \
        'a model runs only to score --references'
    if given:
        parser.error(f'{", ".join(given)}: no effect with --recorded, whose answers are the '
                     f"live vlm_node's; {model}")


def evaluate(args) -> dict:
    """Run the evaluation args describe, write its outputs; return the summary."""
    out = output_folder(args.out)
    sync = Sync(args.max_skew, args.wait_for_image)
    with contextlib.closing(open_bag(args.bag)) as reader:
        ask = partial(instructions.from_args, args) if instructions.given(args) else None
        inputs = read_inputs(reader, args.image_topic, args.instruction_topic, ask,
                             tuple(args.cameras))
        entries = load_references(args.references) if args.references else []
        if not (inputs.instructions or entries):
            raise VlmError('bad_input', f'nothing to evaluate: {inputs.path} holds no '
                           f'instruction on {inputs.instruction_topic} ({len(inputs.frames)} '
                           f'frames on {inputs.image_topic}); ask some with --instruction or '
                           '--instructions, or give --references to score')
        ref_frames = reference_frames(entries, frames_by_stamp(inputs.frames), inputs.image_topic)
        if args.recorded:
            records, run = recorded_records(inputs, args.recorded)
            pending = []
        else:
            pending = plan_requests(inputs, args.captions, sync)
            records, run = [], {'mode': 'engine'}
        used = [r['image']['frame'] for r in records if r['image']] + \
            [p.frame.index for p in pending if p.frame] + [f.index for f in ref_frames]
        images = decode_frames(reader, inputs, used)
        images.update(other_frames(reader, inputs, pending, records))
    engine, mean = None, None
    if pending or entries:
        config = engine_config(args, args.model, max_new_tokens=args.max_new_tokens,
                               max_image_side=args.max_image_side)
        # Imported here: torch takes seconds to import, and a recording read back (--recorded)
        # or a bad argument needs no model.
        from ..engine.local import VlmEngine

        engine = VlmEngine(config)
        engine.load()
        # decoding: the mode that ran, which --decode-mode auto leaves to the device
        run.update(model=args.model, device=str(engine.loaded.device),
                   dtype=engine.loaded.dtype_name,
                   decoding=engine.decoding.mode)
        if pending:  # the settings the answers were made under (scores have none of their own)
            run['settings'] = engine_settings(config)
    if pending:
        records, seconds = run_engine(engine, inputs, pending, images, args.batch_size, sync)
        answered = sum(r['status'] in ANSWERED for r in records)
        run['images_per_s'] = answered / seconds if seconds > 0 else None
    if entries:
        scored, mean = score_references(engine, inputs, entries, ref_frames, images,
                                        args.batch_size)
        records += scored
    if engine is not None:
        import torch  # loaded with the engine

        # Asked in this thread, which ran the model: the threads it computed with.
        run['cpu_threads'] = torch.get_num_threads()
    if inputs.cameras:
        run['cameras'] = {camera.name: camera.topic for camera in inputs.cameras}
    run.update(bag=inputs.path, image_topic=inputs.image_topic,
               instruction_topic=inputs.instruction_topic, frames=len(inputs.frames),
               instructions=len(inputs.instructions))
    summary = summarize(records, run, mean)
    boxes = boxes_by_frame(records)
    thumbnails = {key: thumbnail_jpeg(image, boxes=boxes.get(key, ()))
                  for key, image in images.items() if not isinstance(image, Exception)}
    write_outputs(out, records, summary, thumbnails)
    return summary


def main(argv=None) -> int:
    """Console script vlm_eval: exit 0 with a report, else the reason on stderr.

    Exit 2 for bad input (arguments, recordings, files), as argparse does; 1 when the model
    fails.
    """
    args = parse_args(sys.argv[1:] if argv is None else argv)
    code, summary = reported('vlm_eval', lambda: evaluate(args))
    if code:
        return code
    if print_line(format_table(summary)):  # else the reader has gone (| head): the report stays
        print_line(f'wrote {args.out}/results.jsonl, summary.json, latency.png, report.html')
    return 0


if __name__ == '__main__':
    sys.exit(main())
