"""The engine's command-line options, shared by the tools that load a model.

vlm_benchmark, vlm_eval and vlm_export: one definition keeps --device, --dtype, --cpu-threads
and --processor-kwargs spelled, checked and documented alike in every tool, and one builder
turns them into the EngineConfig each tool loads. The options of how answers are generated
(--decode-mode, --constrain-plans, --skills) are apart: a tool that generates no answers
(vlm_export's features) does not offer them, as they would change nothing there. Limits the
node has too (--max-new-tokens, --max-image-side) take its ranges, so that a tool refuses what
vlm_node would.
"""

import argparse

from ..bag.arguments import not_negative_int, whole
from ..engine import EngineConfig, VlmError
from ..engine.config import DECODE_MODES, DEVICES_HELP, DTYPES, parse_processor_kwargs
from ..engine.plan_schema import CONSTRAIN_MODES
from ..node.params import BY_NAME


def _processor_kwargs(text: str) -> dict:
    """Parse --processor-kwargs; argparse reports the error next to the option name."""
    try:
        return parse_processor_kwargs(text, '--processor-kwargs')
    except VlmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of where and how a model runs (the model itself is each tool's own)."""
    parser.add_argument('--device', default='auto', help=DEVICES_HELP)
    parser.add_argument('--dtype', default='auto', choices=DTYPES)
    parser.add_argument('--processor-kwargs', type=_processor_kwargs, default={},
                        help='JSON for the processor call, e.g. {"do_image_splitting": false}')
    parser.add_argument('--cpu-threads', type=not_negative_int, default=0, metavar='N',
                        help="threads torch computes with on the CPU (0 = torch's default: "
                        'OMP_NUM_THREADS, else one per core)')
    parser.add_argument('--trust-remote-code', action='store_true',
                        help="run the model repository's own Python code (auto_map), as "
                        "vlm_node's trust_remote_code does: read it first")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add add_model_args' options and those of how the model generates its answers."""
    add_model_args(parser)
    parser.add_argument('--decode-mode', default='auto', choices=DECODE_MODES,
                        help="auto = on CUDA greedy steps replayed from CUDA graphs (graphs) "
                        "where the family allows, else transformers' compiled static cache "
                        "(compiled), prepared at load; eager elsewhere; 'static' = static "
                        "cache, not compiled")
    parser.add_argument('--constrain-plans', default='auto', choices=CONSTRAIN_MODES,
                        help="plans under the plan schema's grammar: auto = wherever the "
                        "tokenizer allows (vlm_node's default), on = or fail, off = free text")
    parser.add_argument('--skills', nargs='*', default=[], metavar='SKILL',
                        help="the robot's skills: every plan step's skill is one of them")


def _node_limited(name: str):
    """Return the argparse type of the node's whole-number parameter name, in its range."""
    spec = BY_NAME[name]

    def limited(text: str) -> int:
        value = whole(text, spec.low)
        if value > spec.high:
            raise argparse.ArgumentTypeError(f"must be <= {spec.high}, as vlm_node's {name}; "
                                             f'got {text}')
        return value

    return limited


def add_limit_arg(parser: argparse.ArgumentParser, name: str) -> None:
    """Add --NAME for the node's parameter name: its range, default and description."""
    spec = BY_NAME[name]
    parser.add_argument(f'--{name.replace("_", "-")}', type=_node_limited(name),
                        default=spec.default, help=f"{spec.description}; as vlm_node's {name}"
                        f' ({spec.low} to {spec.high}, default {spec.default})')


def model_config(args: argparse.Namespace, model: str, **fields) -> EngineConfig:
    """Build the EngineConfig of model from add_model_args' options plus the tool's fields."""
    return EngineConfig(model=model, device=args.device, dtype=args.dtype,
                        processor_kwargs=args.processor_kwargs, cpu_threads=args.cpu_threads,
                        trust_remote_code=args.trust_remote_code, **fields)


def engine_config(args: argparse.Namespace, model: str, **fields) -> EngineConfig:
    """Build the EngineConfig of model from add_engine_args' options plus the tool's fields."""
    return model_config(args, model, decode_mode=args.decode_mode,
                        constrain_plans=args.constrain_plans, skills=tuple(args.skills),
                        **fields)
