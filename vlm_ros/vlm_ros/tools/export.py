"""vlm_export: a recording into a training set of (features, action) pairs for an action head.

    vlm_export BAG --model DIR_OR_HUB_ID --actions /cmd_vel [--out dataset] [--layer -1]
               [--pooling last|mean] [--window 0.5] [--batch-size 4]
    vlm_export robot.bag --model M --actions /joint_commands --instruction "fold the towel"

Each camera frame logged while an instruction is in force (the recording's, or --instruction
/ --instructions as vlm_eval takes them) is paired with the first action logged at or after it
within --window seconds: a geometry_msgs/Twist or TwistStamped, a sensor_msgs/JointState
(positions) or a vlm_ros_msgs/StepCommand (the index of its skill and target). Its features are
the model's hidden states of the frame and the instruction's plan prompt, as vlm_node publishes
them with publish_features. Writes OUT/dataset.npz (features, actions, frame_stamp_ns,
frame_log_ns, action_log_ns, instruction) and OUT/manifest.json (model, layer, pooling, topics,
the instructions, the action columns, counts), all or nothing, and says how the model ran: in how
many batches of --batch-size and on how many CPU threads (--cpu-threads) torch computed.
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
from ..engine.features import FeatureSpec
from ..eval.actions import read_actions
from ..eval.dataset import check_out, features_of, pair_frames, write_dataset
from ..eval.inputs import decode_frames, read_inputs
from .engine_args import add_limit_arg, add_model_args, model_config


def parse_args(argv):
    """Parse the command line; --model and --actions are required."""
    parser = ArgumentParser(prog='vlm_export', description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('bag', help=f'the inputs: {READABLE}')
    parser.add_argument('--model', required=True, help='hub id or save_pretrained directory')
    parser.add_argument('--actions', required=True, metavar='TOPIC',
                        help="the robot's commands: Twist, TwistStamped, JointState or "
                        'StepCommand')
    parser.add_argument('--out', default='dataset', help='output directory (replaced)')
    parser.add_argument('--image-topic', help='default: the one Image topic, else the one '
                        'CompressedImage topic')
    parser.add_argument('--instruction-topic', help='default: the one std_msgs/String topic '
                        'named .../instruction')
    add_instruction_args(parser)
    parser.add_argument('--layer', type=int, default=-1,
                        help='hidden state as transformers counts them (default -1: the last)')
    parser.add_argument('--pooling', choices=('last', 'mean'), default='last',
                        help="the prompt's last token or the mean over its tokens")
    parser.add_argument('--window', type=not_negative, default=0.5,
                        help='seconds after a frame in which its action must be logged')
    parser.add_argument('--batch-size', type=positive_int, default=4)
    # Not --decode-mode, --constrain-plans nor --skills: they shape generated text, and the
    # features are the prompt's hidden states.
    add_model_args(parser)
    add_limit_arg(parser, 'max_image_side')
    args = parser.parse_args(argv)
    check_instruction_args(parser, args)
    return args


def export(args) -> dict:
    """Build and write the training set args describe; return its manifest."""
    out = output_folder(args.out)
    check_out(out)
    with contextlib.closing(open_bag(args.bag)) as reader:
        ask = partial(instructions.from_args, args) if instructions.given(args) else None
        inputs = read_inputs(reader, args.image_topic, args.instruction_topic, ask)
        actions = read_actions(reader, args.actions)
        pairs, without = pair_frames(inputs, actions, round(args.window * 1e9))
        if not pairs:
            raise VlmError('bad_input', f'no frame of {inputs.image_topic} has both an '
                           f'instruction in force and an action on {args.actions} within '
                           f'{args.window:g} s ({without["instruction"]} without an '
                           f'instruction, {without["action"]} without an action'
                           f'{_left_out(actions.not_finite, args.actions, ", ")}); nothing '
                           'written')
        images = decode_frames(reader, inputs, [p.frame.index for p in pairs])
    import torch  # torch and the engine: imported only once the recording is good

    from ..engine.local import VlmEngine

    engine = VlmEngine(model_config(args, args.model, max_new_tokens=1,
                                    max_image_side=args.max_image_side))
    engine.load()
    try:
        features, batches = features_of(engine, inputs, pairs, images,
                                        FeatureSpec(args.layer, args.pooling), args.batch_size)
        # Asked in this thread, which ran the model: the threads it computed with.
        threads = torch.get_num_threads()
        # Where and in which precision the model ran, as --device and --dtype auto chose:
        # features of other weights' precision differ by more than their rounding.
        ran = {'device': str(engine.loaded.device),
               'dtype': engine.loaded.dtype_name}
    finally:
        engine.unload()
    manifest = {'model': args.model, **ran, 'layer': args.layer, 'pooling': args.pooling,
                'bag': inputs.path, 'image_topic': inputs.image_topic,
                'instruction_topic': inputs.instruction_topic,
                'instructions': [i.text for i in inputs.instructions],
                'actions': {'topic': actions.topic, 'type': actions.msgtype,
                            'columns': list(actions.names), 'skills': actions.skills,
                            'not_finite': actions.not_finite},
                'window_s': args.window, 'max_image_side': args.max_image_side,
                'processor_kwargs': args.processor_kwargs,
                'pairs': len(pairs), 'features_shape': list(features.shape),
                'frames_without': without, 'batches': batches, 'cpu_threads': threads}
    write_dataset(out, features, pairs, actions, manifest)
    return manifest


def main(argv=None) -> int:
    """Console script vlm_export: exit 0 with the set written, else the reason on stderr."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    code, manifest = reported('vlm_export', lambda: export(args))
    if code:
        return code
    print_line(f'wrote {args.out}/dataset.npz ({manifest["pairs"]} pairs, features '
               f'{"x".join(map(str, manifest["features_shape"]))}'
               f'{_left_out(manifest["actions"]["not_finite"], args.actions, "; ")}) and '
               f'manifest.json; the model ({manifest["dtype"]} on {manifest["device"]}) ran in '
               f'{_count(manifest["batches"], "batch", "batches")} on '
               f'{_count(manifest["cpu_threads"], "CPU thread", "CPU threads")}')
    return 0


def _left_out(not_finite: int, topic: str, before: str) -> str:
    """Return what was left out of the actions for values NaN or inf ('' where none was)."""
    if not not_finite:
        return ''
    return f'{before}{_count(not_finite, "message", "messages")} of {topic} left out: ' \
        'a value not finite (NaN or inf)'


def _count(number: int, one: str, many: str) -> str:
    """Return '1 batch' or '2 batches': the summary line reads as a sentence."""
    return f'{number} {one if number == 1 else many}'


if __name__ == '__main__':
    sys.exit(main())
