"""The engine's command-line options, shared by the tools that load a model (benchmark, eval).

One definition keeps --device, --dtype, --cpu-threads and --processor-kwargs spelled, checked
and documented alike in every tool, and one builder turns them into the EngineConfig each tool
loads.
"""

import argparse

from ..bag.arguments import not_negative_int
from ..engine import EngineConfig, VlmError
from ..engine.config import DECODE_MODES, DEVICES_HELP, DTYPES, parse_processor_kwargs
from ..engine.plan_schema import CONSTRAIN_MODES


def _processor_kwargs(text: str) -> dict:
    """Parse --processor-kwargs; argparse reports the error next to the option name."""
    try:
        return parse_processor_kwargs(text, '--processor-kwargs')
    except VlmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Add the options of where and how a model runs (the model itself is each tool's own)."""
    parser.add_argument('--device', default='auto', help=DEVICES_HELP)
    parser.add_argument('--dtype', default='auto', choices=DTYPES)
    parser.add_argument('--processor-kwargs', type=_processor_kwargs, default={},
                        help='JSON for the processor call, e.g. {"do_image_splitting": false}')
    parser.add_argument('--decode-mode', default='auto', choices=DECODE_MODES,
                        help="auto = on CUDA greedy steps replayed from CUDA graphs (graphs) "
                        "where the family allows, else transformers' compiled static cache "
                        "(compiled), prepared at load; eager elsewhere; 'static' = static "
                        "cache, not compiled")
    parser.add_argument('--cpu-threads', type=not_negative_int, default=0, metavar='N',
                        help="threads torch computes with on the CPU (0 = torch's default: "
                        'OMP_NUM_THREADS, else one per core)')
    parser.add_argument('--constrain-plans', default='auto', choices=CONSTRAIN_MODES,
                        help="plans under the plan schema's grammar: auto = wherever the "
                        "tokenizer allows (vlm_node's default), on = or fail, off = free text")
    parser.add_argument('--skills', nargs='*', default=[], metavar='SKILL',
                        help="the robot's skills: every plan step's skill is one of them")


def engine_config(args: argparse.Namespace, model: str, **fields) -> EngineConfig:
    """Build the EngineConfig of model from add_engine_args' options plus the tool's fields."""
    return EngineConfig(model=model, device=args.device, dtype=args.dtype,
                        processor_kwargs=args.processor_kwargs, decode_mode=args.decode_mode,
                        cpu_threads=args.cpu_threads,
                        constrain_plans=args.constrain_plans, skills=tuple(args.skills),
                        **fields)
