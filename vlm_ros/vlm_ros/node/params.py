"""The node's parameters: one table of specs, and validation as a pure function.

Defaults live in config/vlm.yaml (a ROS params file); the table here gives types, ranges,
descriptions and when a change takes effect (``applies``):

- 'reload': needs a model reload (model, device, backend, ...): refused while a model is loaded,
  accepted in the unconfigured state, so a configure that failed on a bad model or an unset key
  can succeed once the parameter is fixed, without a restart;
- 'launch': read-only, set at start-up (ROS refuses every later change);
- 'engine' and 'limits': the next request uses the new value;
- 'timers' and 'images': the node restarts its timers or image subscription at once.

settings.Settings holds one typed value per spec, validated here; the node builds a new one on
each accepted change and applies each group to its parts (node.py). test_node_parameters.py
observes every run-time parameter's effect on a live node, driven by this same table.
"""

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

from ..engine.config import BACKENDS, DECODE_MODES, DTYPES, parse_processor_kwargs
from ..engine.errors import VlmError
from ..engine.features import POOLINGS
from ..engine.plan_schema import CONSTRAIN_MODES, parse_skills
from ..engine.prompts import check_template

VERIFY_BY = ('answer', 'likelihood')  # Settings.verify_by (plan_execution.py)
FEATURE_DTYPES = ('float32', 'float16', 'bfloat16')  # Settings.features_dtype (features_msg.py)


@dataclass(frozen=True)
class ParamSpec:
    """A parameter's default, meaning, and the values it accepts."""

    name: str
    default: object
    description: str
    applies: str = 'engine'  # one of APPLIES
    choices: tuple = ()
    low: Optional[float] = None
    high: Optional[float] = None


SPECS = (
    ParamSpec('model', 'HuggingFaceTB/SmolVLM-256M-Instruct', 'Hugging Face hub id or local '
              'save_pretrained directory of the VLM', applies='reload'),
    ParamSpec('device', 'auto', "'auto', 'cpu', 'cuda' or 'cuda:N'", applies='reload'),
    ParamSpec('dtype', 'auto', 'weights dtype; auto = bfloat16 on GPUs that support it, '
              'float16 on older GPUs, float32 on a CPU', applies='reload', choices=DTYPES),
    ParamSpec('attn_implementation', '', "attention kernel ('' = transformers default, "
              "'sdpa', 'eager', 'flash_attention_2')", applies='reload'),
    ParamSpec('decode_mode', 'auto', "in-process backend: 'auto' = on CUDA 'graphs' (greedy "
              "steps compiled and replayed from CUDA graphs, the prefill compiled; LLaVA, "
              "Idefics3/SmolVLM, Qwen2-VL, Qwen2.5-VL) or else 'compiled' (transformers' "
              "compiled static cache), "
              "both prepared while configuring; eager elsewhere; 'static' = static cache, not "
              "compiled; 'compiled' and 'graphs' also on a CPU", applies='reload',
              choices=DECODE_MODES),
    ParamSpec('cpu_threads', 0, 'in-process backend: threads torch computes with on the CPU, '
              'for the whole process (0 = as the process started: OMP_NUM_THREADS, else one '
              "per core); fewer leave cores to the robot's other processes, more answer "
              'faster on a CPU', applies='reload', low=0, high=1024),
    ParamSpec('trust_remote_code', False, 'run model code from the hub (off: safer); decides '
              'what code runs, so it is set at launch only', applies='launch'),
    ParamSpec('local_files_only', False, 'never download; use the local cache only',
              applies='reload'),
    ParamSpec('backend', 'transformers', "'transformers' runs the model in this process; "
              "'openai' asks an OpenAI-compatible server (vLLM, SGLang, TGI, Ollama) at "
              'base_url; decides where camera images go, so it is set at launch only',
              applies='launch', choices=BACKENDS),
    ParamSpec('base_url', 'http://127.0.0.1:8000/v1', "openai backend: the server's API root, "
              'up to and including /v1; where images and the key go, so set at launch only',
              applies='launch'),
    ParamSpec('remote_model', '', "openai backend: the model's name on the server ('' = the "
              'model parameter)', applies='reload'),
    ParamSpec('api_key_env', '', 'openai backend: the environment variable holding the API key '
              "('' = the server needs none); the key itself is never a parameter; set at launch "
              'only, so nobody on the DDS domain can send another variable as a key',
              applies='launch'),
    ParamSpec('request_timeout', 30.0, 'openai backend: seconds to wait for a connection and for '
              'each data event of an answer (SSE comments do not count)', applies='reload',
              low=0.1, high=3600.0),
    ParamSpec('max_retries', 2, 'openai backend: retries of a refused, timed-out, 429 or 5xx '
              'request before any text arrived, with exponential backoff from 0.5 s',
              applies='reload', low=0, high=10),
    ParamSpec('max_concurrency', 4, 'openai backend: requests this node has at the server at '
              'once (the server batches them)', applies='reload', low=1, high=256),
    ParamSpec('jpeg_quality', 90, 'openai backend: JPEG quality of the images sent',
              applies='reload', low=1, high=100),
    ParamSpec('autostart', True, 'configure and activate at start-up; false: wait for a '
              'lifecycle manager', applies='launch'),
    ParamSpec('constrain_plans', 'auto', "in-process backend: plans are written under a grammar "
              "of the plan JSON (llguidance), so every answer parses and follows skills; 'auto' "
              "= wherever the model's tokenizer is supported, 'on' = configure fails where it is "
              "not, 'off' = free text parsed as before. openai backend: the schema is sent as "
              "response_format and each plan checked against it; one that does not follow it "
              "says so in its message, and under 'on' is STATUS_INVALID_OUTPUT",
              applies='reload', choices=CONSTRAIN_MODES),
    ParamSpec('skills', (), 'the skills the robot can execute, e.g. [pick, place, push]: every '
              "constrained step's skill is one of them (empty = free text); a skill may name "
              "its arguments, 'place(object, location)': its steps carry them "
              '(plan_arguments, step_arguments)'),
    ParamSpec('max_new_tokens', 128, 'generation limit per request', low=1, high=4096),
    ParamSpec('processor_kwargs', '', 'JSON object for the processor call, e.g. '
              '{"do_image_splitting": false}: one SmolVLM tile instead of a grid of 17, '
              'about 10x faster on a CPU', applies='reload'),
    ParamSpec('max_image_side', 640, 'longer image side fed to the model, pixels (0 = as is)',
              low=0, high=8192),
    ParamSpec('image_transport', 'auto', "'raw' subscribes to image (sensor_msgs/Image), "
              "'compressed' to image/compressed, 'auto' to both (raw frames win when both "
              'publish)', applies='images', choices=('auto', 'raw', 'compressed')),
    ParamSpec('image_reliability', 'best_effort', 'QoS reliability of the image subscription '
              '(depth 1: the node keeps only the latest frame)', applies='images',
              choices=('best_effort', 'reliable')),
    ParamSpec('use_depth', False, "subscribe to the camera's aligned depth image (depth/image: "
              '16UC1 millimetres or 32FC1 metres) and camera_info (with cameras: each '
              "camera's NAME/depth/image and NAME/camera_info), so each ~/ground box and each "
              "plan step's box (plan_targets) also gets a 3D point in its camera's optical "
              'frame', applies='images'),
    ParamSpec('cameras', (), 'camera names, e.g. [head, wrist]: each camera takes images from '
              'NAME/image (NAME/image/compressed, by image_transport), and every camera request '
              'uses one frame of each, each after its name in the prompt (a model that takes '
              'one image a prompt fails configure); empty = one camera on image, as before; '
              'checked against the model when configuring', applies='reload'),
    ParamSpec('max_skew', 0.1, 'with several cameras: seconds the stamps of the frames one '
              'request uses may lie apart; a request that finds none closer within '
              'wait_for_image is STATUS_UNSYNCHRONIZED, with the skew (0 = no limit)',
              applies='limits', low=0.0, high=60.0),
    ParamSpec('instruction_qos_depth', 100, 'QoS depth (reliable, KEEP_LAST) of every output '
              'but caption and /diagnostics: plan, vla_instruction, step, step_arguments, '
              'plan_progress, the companion topics (the instruction subscription keeps every '
              'message); a QoS change needs new endpoints, so it is set at launch',
              applies='launch', low=1, high=10000),
    ParamSpec('max_image_pixels', 33_554_432, 'largest image accepted, in pixels (width x '
              'height, read from a compressed header before decoding); larger ones give '
              'STATUS_BAD_INPUT (0 = no limit)', applies='images', low=0, high=2**31 - 1),
    ParamSpec('publish_features', False, "publish each plan request's features on ~/features "
              "(vlm_ros_msgs/Features: the prompt's hidden states at features_layer, pooled by "
              "features_pooling, from the plan's own prefill) for a VLA action head; "
              'in-process backend', applies='limits'),
    ParamSpec('features_layer', -1, "any features output: the hidden state taken, as "
              "transformers counts them: 0 = the input embeddings, 1 = the first layer's "
              'output, -1 = the last layer (after the final norm); a layer the model lacks '
              'gives features with no values and the reason', applies='limits', low=-1000,
              high=1000),
    ParamSpec('features_pooling', 'last', "any features output: 'last' = the prompt's last "
              "token, 'mean' = the mean over its tokens, 'tokens' = every token's state",
              applies='limits', choices=POOLINGS),
    ParamSpec('features_dtype', 'float32', "any features output: 'float32' values, or "
              "'float16' or 'bfloat16' as raw 16-bit words (half the bytes)", applies='limits',
              choices=FEATURE_DTYPES),
    ParamSpec('max_feature_bytes', 4_194_304, 'any features output: features larger than this '
              'are published without values, saying so', applies='limits', low=1024, high=2**28),
    ParamSpec('max_batch_size', 1, 'in-process backend: up to this many waiting requests are '
              "answered by one batched generate (1 = one at a time; the openai backend's "
              'server batches by itself)', applies='limits', low=1, high=64),
    ParamSpec('batch_wait', 0.005, 'with max_batch_size > 1: a batch starts when it is full '
              'or when no request came for this many s (at most max_batch_size x batch_wait '
              'after the first)', applies='limits', low=0.0, high=1.0),
    ParamSpec('preprocess_ahead', False, 'in-process backend: while a batch generates, convert '
              'and preprocess the images that waiting queries and goals carry (camera requests '
              'take the frame that is newest when their batch starts); on for a GPU, off where '
              "the model's CPU threads would share the cores with it", applies='limits'),
    ParamSpec('max_text_chars', 4096, 'longest instruction or question, in characters; longer '
              'ones are answered STATUS_BAD_INPUT at once (echoing this many)',
              applies='limits', low=1, high=1_000_000),
    ParamSpec('min_confidence', 0.0, 'plans whose geometric mean token probability '
              '(exp(PlanConfidence.mean)) is below it are published STATUS_LOW_CONFIDENCE, '
              'steps carried, and never executed (0 = off); openai backend: from the '
              "server's logprobs, and a plan without them says it was not checked",
              applies='limits', low=0.0, high=1.0),
    ParamSpec('max_image_age', 0.0, 'seconds; older images give STATUS_STALE_IMAGE '
              '(0 = no limit)', applies='limits', low=0.0, high=3600.0),
    ParamSpec('wait_for_image', 2.0, 'seconds a request may wait for a first or fresh frame',
              applies='limits', low=0.0, high=600.0),
    ParamSpec('caption_rate', 0.0, 'Hz of captions of the latest frame (0 = off); skipped '
              'while busy, and cancelled (none published) by any request that comes before '
              'it is done', applies='timers', low=0.0, high=100.0),
    ParamSpec('features_rate', 0.0, 'Hz of features (on ~/features, request_id empty) of the '
              'latest frame(s) and the last instruction, for an action head that acts faster '
              'than plans change (0 = off; features_* as with publish_features); only on new '
              'frames, skipped while busy; waits max_skew at most for the other cameras, and '
              'says why in problem where none are made; in-process backend',
              applies='timers', low=0.0, high=100.0),
    ParamSpec('replan_period', 0.0, 'seconds between re-plans of the last instruction on '
              'fresh frames (0 = off, else at least 0.01); skipped while busy, and cancelled (a '
              'STATUS_CANCELLED Plan) by any request that comes before it is done',
              applies='timers', low=0.0, high=3600.0),
    ParamSpec('queue_size', 8, 'requests that may wait; more are answered STATUS_DROPPED',
              applies='limits', low=1, high=1000),
    ParamSpec('execute_plans', False, "execute each OK instruction Plan with a VLA action head: "
              "steps one at a time on 'step' (and 'vla_instruction'), the head's 'step_feedback' "
              "moves on or re-plans; false: only the first step goes to 'vla_instruction'",
              applies='plans'),
    ParamSpec('step_timeout', 30.0, 's a step may go without feedback (SUCCEEDED, FAILED or '
              'RUNNING) before the node re-plans', applies='plans', low=0.1, high=3600.0),
    ParamSpec('max_replans', 2, 're-plans of one instruction (after failed, silent or '
              'unconfirmed steps) before its execution ends FAILED', applies='plans', low=0,
              high=20),
    ParamSpec('verify_steps', False, 'ask the VLM (prompt_verify, newest frame) whether each '
              'step the head reports SUCCEEDED is done; anything but yes re-plans',
              applies='plans'),
    ParamSpec('verify_by', 'answer', "how a step check is read: 'answer' = the first yes or no "
              "word of the generated answer; 'likelihood' = the model's log-probability of "
              "'yes' against 'no' after the prompt (one forward pass, nothing generated; "
              'in-process backend)', applies='plans', choices=VERIFY_BY),
    ParamSpec('prompt_caption', '', "caption prompt template ('' = built-in)"),
    ParamSpec('prompt_vqa', '', "question template with {question} ('' = built-in)"),
    ParamSpec('prompt_plan', '', "plan template with {instruction} ('' = built-in)"),
    ParamSpec('prompt_replan', '', 're-plan template with {instruction}, {done} (the steps done) '
              "and {failed} (the step that failed) ('' = built-in)"),
    ParamSpec('prompt_verify', '', "step check template with {step}, answered yes or no "
              "('' = built-in)"),
    ParamSpec('prompt_ground', '', "~/ground template with {phrase}, answered with boxes in "
              "any notation grounding models write ('' = built-in)"),
)
APPLIES = {
    'reload': 'read-only while a model is loaded; change it after cleanup',
    'launch': 'read-only: set it at launch',
    'engine': 'applies from the next request',
    'limits': 'applies from the next request',
    'timers': 'restarts its timer at once',
    'images': 'subscribes again at once',
    'plans': 'applies from the next step, feedback or re-plan',
}
BY_NAME = {spec.name: spec for spec in SPECS}
# What a value of each spec's type is, as a refusal says it (ROS's types, as ros2 param writes)
TYPE_WORDS = {bool: 'true or false', int: 'an integer', str: 'a string',
              float: 'a double, written with a decimal point (e.g. 1.0)',
              tuple: 'a string array, e.g. [pick, place]'}
_ON_OFF = {'on', 'off'}  # choices ROS may hand over as a bool (typed)
RUN_TIME = tuple(spec.name for spec in SPECS if spec.applies not in ('reload', 'launch'))
PROMPT_PARAMS = {'prompt_caption': 'caption', 'prompt_vqa': 'vqa', 'prompt_plan': 'plan',
                 'prompt_replan': 'replan', 'prompt_verify': 'verify', 'prompt_ground': 'ground'}


# Parameters every rclpy node has, besides ours; qos_overrides.* configure publishers and
# subscriptions (ROS's QoS overrides), whatever their topic.
ROS_PARAMS = ('use_sim_time', 'start_type_description_service')
ROS_PREFIXES = ('qos_overrides.',)


def unknown_parameters(names: Iterable[str]) -> Optional[str]:
    """Say which of names are no parameter of vlm_node, each with the nearest valid name.

    rclpy ignores a value given for a parameter the node never declares: ``modle:=DIR`` would
    load the default model, silently. Names come from the command line, params files and
    launch files alike (rclpy's parameter overrides).
    """
    known = [*BY_NAME, *ROS_PARAMS]
    unknown = sorted(name for name in set(names)
                     if name not in known and not name.startswith(ROS_PREFIXES))
    if not unknown:
        return None

    def hint(name: str) -> str:
        near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        return f'{name!r} (did you mean {near[0]!r}?)' if near else repr(name)
    return (f"unknown parameter{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(hint(name) for name in unknown)}: vlm_node has no such parameter "
            "(docs/PARAMETERS.md lists them); correct it and start the node again")


def processor_kwargs(text: str) -> dict:
    """Parse the processor_kwargs parameter ('' = none) into keyword arguments, or VlmError."""
    return parse_processor_kwargs(text) if text.strip() else {}


MAX_CAMERAS = 8  # images in one prompt: each costs its own vision tokens


def check_camera_names(names: tuple) -> None:
    """Raise VlmError unless names are distinct ROS name tokens, at most MAX_CAMERAS of them.

    Each name becomes a topic namespace (NAME/image) and a word in the prompt.
    """
    bad = [name for name in names if not re.fullmatch(r'[A-Za-z][A-Za-z0-9_]{0,31}', name)]
    if bad:
        raise VlmError('bad_input', f'camera names must be a letter then letters, digits or _ '
                       f'(32 at most): {", ".join(repr(name[:40]) for name in bad[:4])}')
    if len(set(names)) != len(names):
        raise VlmError('bad_input', f'camera names repeat: {", ".join(names)}')
    if len(names) > MAX_CAMERAS:
        raise VlmError('bad_input', f'{len(names)} cameras; at most {MAX_CAMERAS} go in one '
                       'prompt')


def _check_value(name: str, value) -> None:
    """Raise VlmError when a parameter's text does not parse, or a period only burns a core."""
    if name == 'replan_period' and 0 < value < 0.01:  # as caption_rate's 100 Hz at most
        raise VlmError('bad_input', f'replan_period must be 0 (off) or 0.01 s at least: {value!r}')
    elif name == 'cameras':
        check_camera_names(value)
    elif name == 'processor_kwargs':
        processor_kwargs(value)
    elif name == 'skills':
        parse_skills(value)
    elif name in PROMPT_PARAMS and value:
        check_template(PROMPT_PARAMS[name], value)


def typed(name: str, value):
    """Return a parameter's value as its Settings field holds it: string arrays as tuples.

    ROS hands a string array over as a list, and one never given as None: it is declared by
    type (declared_default), since an empty default would make it a byte array. A choice of
    'on' and 'off' written bare (constrain_plans:=off) arrives as a bool.
    """
    spec = BY_NAME.get(name)
    if spec is None:
        return value
    if isinstance(value, bool) and _ON_OFF <= set(spec.choices):
        return 'on' if value else 'off'  # ROS reads a bare on/off as a bool (descriptor)
    if not isinstance(spec.default, tuple):
        return value
    if value is None:
        return spec.default
    return tuple(value) if isinstance(value, (list, tuple, bytes)) or hasattr(value, 'tolist') \
        else value


def declared_default(spec: ParamSpec):
    """Return what the node declares spec with: its default, or None for a string array.

    A string array is dynamically typed (descriptor), which rclpy declares without a type: one
    given no value is unset, and the node then sets it to default_parameter, so every
    parameter reads as a value.
    """
    return None if isinstance(spec.default, tuple) else spec.default


def default_parameter(spec: ParamSpec):
    """Return spec's default as an rclpy Parameter (a typed empty array for a string array)."""
    from rclpy.parameter import Parameter

    if isinstance(spec.default, tuple):
        return Parameter(spec.name, Parameter.Type.STRING_ARRAY, list(spec.default))
    return Parameter(spec.name, value=spec.default)


def validate(name: str, value, model_loaded: bool = False) -> Optional[str]:
    """Return why value is not acceptable for parameter name, or None when it is."""
    spec = BY_NAME.get(name)
    if spec is None:
        return None  # not ours (e.g. use_sim_time): rclpy validates it
    if spec.applies == 'reload' and model_loaded:
        return f'{name} needs a model reload: deactivate and cleanup the node, then set it'
    if type(value) is not type(spec.default) or (
            isinstance(value, tuple) and not all(isinstance(item, str) for item in value)):
        shown = list(value) if isinstance(value, tuple) else value
        return f'{name} must be {TYPE_WORDS[type(spec.default)]}; got {shown!r}'[:300]
    if spec.choices and value not in spec.choices:
        return f'{name} must be one of {", ".join(spec.choices)}; got {value!r}'
    if spec.low is not None and not spec.low <= value <= spec.high:
        return f'{name} must be within [{spec.low}, {spec.high}]; got {value!r}'
    try:
        _check_value(name, value)
    except VlmError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a hostile value is refused, never a crash
        return f'{name} cannot be used: {type(exc).__name__}: {str(exc)[:200]}'
    return None


def validate_all(values: dict, model_loaded: bool = False) -> Optional[str]:
    """Return the reasons (joined) why any of values is unacceptable, or None."""
    reasons = [reason for name, value in values.items()
               if (reason := validate(name, value, model_loaded)) is not None]
    return '; '.join(reasons) or None


def descriptor(spec: ParamSpec):
    """Build the rcl ParameterDescriptor of spec: description, when it applies, choices, range.

    ``read_only`` is set for 'launch' parameters only. Reload parameters stay writable: ROS
    would refuse every later change, and the lifecycle allows one after cleanup; validate()
    enforces the rest.
    """
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    text = f'{spec.description} [{APPLIES[spec.applies]}]'
    if spec.choices:
        text += f" [one of: {', '.join(spec.choices)}]"
    # Typed by validate() instead of rclpy: a bare on/off arrives as a bool, and an empty
    # list as a byte or bool array (rclpy's and ros2 param set's guess for []), which a
    # string array's declared type would refuse: skills could never be emptied again.
    result = ParameterDescriptor(description=text, read_only=spec.applies == 'launch',
                                 dynamic_typing=_ON_OFF <= set(spec.choices) or
                                 isinstance(spec.default, tuple))
    if spec.low is not None and isinstance(spec.default, int):
        result.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high),
                                             step=0)]
    elif spec.low is not None:
        result.floating_point_range = [FloatingPointRange(from_value=float(spec.low),
                                                          to_value=float(spec.high), step=0.0)]
    return result
