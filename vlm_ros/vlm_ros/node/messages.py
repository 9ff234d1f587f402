"""Outcomes to ROS messages, and Plans and Captions back to text for a terminal.

The node builds plans, captions, query responses and diagnostics here; vlm_client and
vlm_replay --echo print with the same formatting.
"""

from collections.abc import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PointStamped
from std_msgs.msg import Header

from vlm_ros_msgs.msg import (
    AnswerConfidence,
    Caption,
    ImageSources,
    Plan,
    PlanArguments,
    PlanConfidence,
    PlanProgress,
    PlanStep,
    PlanTargets,
    SkillArguments,
    StepArguments,
    StepTarget,
)

from ..engine.confidence import UNKNOWN
from ..engine.plan_parser import CLEAN_FORMS
from .jobs import Outcome, Status


def stamp_seconds(stamp) -> float:
    """Convert a builtin_interfaces/Time to float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def step_msgs(steps) -> list:
    """Return the PlanStep messages of engine PlanSteps (or alike)."""
    return [PlanStep(instruction=s.instruction, skill=s.skill, target=s.target) for s in steps]


def plan_msg(outcome: Outcome, model: str, fallback: Header) -> Plan:
    """Build the Plan answering outcome's job; fallback header when no image was used."""
    result = outcome.result
    plan = Plan(request_id=outcome.job.request_id, instruction=outcome.job.text,
                status=int(outcome.status), message=outcome.message, model=model,
                total_time=float(outcome.total_time), form=Plan.FORM_NONE)
    plan.header = outcome.header if outcome.header is not None else fallback
    if result is not None:
        plan.text = result.text
        plan.form = result.form
        plan.steps = step_msgs(result.steps)
        plan.time_to_first_token = float(result.time_to_first_token)
        plan.output_tokens = result.output_tokens
    return plan


def confidence_msg(outcome: Outcome, plan: Plan) -> PlanConfidence:
    """Build the PlanConfidence of plan, the Plan answering outcome's job (NaN: unknown)."""
    result = outcome.result
    mean, low = result.confidence if result is not None else UNKNOWN
    steps = list(result.step_confidence) if result is not None else []
    return PlanConfidence(header=plan.header, request_id=plan.request_id, mean=float(mean),
                          min=float(low), step_mean=[float(m) for m, _ in steps],
                          step_min=[float(m) for _, m in steps])


def arguments_msg(outcome: Outcome, plan: Plan) -> PlanArguments:
    """Build the PlanArguments of plan, the Plan answering outcome's job: one per step."""
    steps = outcome.result.steps if outcome.result is not None and plan.steps else ()
    return PlanArguments(header=plan.header, request_id=plan.request_id,
                         steps=[skill_arguments(step) for step in steps])


def targets_msg(outcome: Outcome, plan: Plan,
                points: Callable[[Outcome, list], list] = lambda outcome, placed: []
                ) -> PlanTargets:
    """Build the PlanTargets of plan, the Plan answering outcome's job: one per step.

    ``points(outcome, placed)`` gives each (box, camera)'s (PointStamped or None, reason),
    with use_depth ([] without), as for ~/ground.
    """
    result = outcome.result
    count = len(plan.steps)
    boxes = list(result.boxes)[:count] if result is not None else []
    problems = list(result.box_problems) if result is not None else []
    cameras = list(result.box_cameras) if result is not None else []
    boxed = [index for index, box in enumerate(boxes) if box]
    found = dict(zip(boxed, points(outcome, [(boxes[i], cameras[i]) for i in boxed]),
                     strict=False)) if boxed and outcome.status == Status.OK else {}
    pointed = [found.get(i, (None, '')) for i in range(count)]
    return PlanTargets(header=plan.header, request_id=plan.request_id, steps=[
        StepTarget(box=[float(v) for v in boxes[i]] if i in boxed else [],
                   camera=cameras[i] if i < len(cameras) else '',
                   problem=problems[i] if i < len(problems) else '',
                   point=pointed[i][0] or PointStamped(), point_problem=pointed[i][1])
        for i in range(count)])


def placed_boxes(result) -> list:
    """Return the (box, camera) of each box of result that is one (a ~/ground answer's)."""
    return [(box, camera) for box, camera in zip(result.boxes, result.box_cameras, strict=True)
            if box is not None]


def box_labels(result) -> list:
    """Return what the model named each box of result that is one ('' where it did not)."""
    return [label for box, label in zip(result.boxes, result.box_labels, strict=True)
            if box is not None]


def step_arguments_msg(header, plan_id: str, index: int, attempt: int, step) -> StepArguments:
    """Build the StepArguments of one StepCommand: the step's skill arguments."""
    return StepArguments(header=header, plan_id=plan_id, index=index, attempt=attempt,
                         arguments=skill_arguments(step))


def skill_arguments(step) -> SkillArguments:
    """Return a step's SkillArguments: its (name, value) pairs; none for a PlanStep message."""
    pairs = getattr(step, 'args', ())
    return SkillArguments(names=[name for name, _ in pairs], values=[value for _, value in pairs])


def answer_confidence_msg(outcome: Outcome) -> AnswerConfidence:
    """Build the AnswerConfidence of an OK caption or ~/query outcome (NaN: unknown)."""
    mean, low = outcome.result.confidence
    return AnswerConfidence(header=outcome.header, task=outcome.job.task,
                            text=outcome.result.text, mean=float(mean), min=float(low))


def sources_msg(outcome: Outcome, header: Header) -> ImageSources:
    """Build the ImageSources of an outcome whose job took a frame per camera."""
    return ImageSources(header=header, request_id=outcome.job.request_id,
                        task=outcome.job.task,
                        cameras=[name for name, _ in outcome.job.sources],
                        images=[image for _, image in outcome.job.sources],
                        skew=float(outcome.job.skew))


def caption_msg(outcome: Outcome, model: str) -> Caption:
    """Build the Caption of an OK caption outcome."""
    return Caption(header=outcome.header, text=outcome.result.text, model=model,
                   total_time=float(outcome.total_time))


def _fill_status(response, outcome: Outcome) -> None:
    """Fill what every answered service response has: success, and the reason when not."""
    response.success = outcome.status == Status.OK
    response.message = outcome.message


def _fill_answered(response, outcome: Outcome) -> None:
    """Fill what Query, Ground and Score responses share: the status and the image header."""
    _fill_status(response, outcome)
    if outcome.header is not None:
        response.image_header = outcome.header


def fill_query_response(response, outcome: Outcome):
    """Fill a Query response: success, the reason when not, the answer and image header."""
    _fill_answered(response, outcome)
    if outcome.result is not None:
        response.answer = outcome.result.text
    return response


def fill_cameras_response(response, outcome: Outcome):
    """Fill a QueryCameras response: the answer, and the image of each camera it used."""
    _fill_status(response, outcome)
    if outcome.result is not None:
        response.answer = outcome.result.text
    if outcome.header is not None:
        response.sources = sources_msg(outcome, outcome.header)
    return response


def fill_ground_response(response, outcome: Outcome, points: Callable[[Outcome, list], list]):
    """Fill a Ground response: success, the reason when not, the boxes (4 floats each).

    ``points(outcome, placed)`` gives each (box, camera)'s (PointStamped or None, reason),
    with use_depth.
    """
    _fill_answered(response, outcome)
    if outcome.result is None:
        return response
    response.text = outcome.result.text
    placed = placed_boxes(outcome.result)
    response.boxes = [float(v) for box, _ in placed for v in box]
    response.labels = box_labels(outcome.result)
    found = points(outcome, placed) if outcome.status == Status.OK else []
    response.points = [point or PointStamped() for point, _ in found]
    response.point_problems = [problem for _, problem in found]
    return response


def fill_score_response(response, outcome: Outcome):
    """Fill a Score response: per candidate its summed and mean log-probability and tokens."""
    _fill_answered(response, outcome)
    for score in outcome.scores or []:
        response.log_prob.append(-score.ce * score.tokens)
        response.mean_log_prob.append(-score.ce)
        response.tokens.append(score.tokens)
    return response


def diagnostics_msg(name: str, level: int, summary: str, values: dict,
                    stamp) -> DiagnosticArray:
    """One DiagnosticStatus named name, level 0-2 (OK, WARN, ERROR), values as strings."""
    status = DiagnosticStatus(
        level=bytes([level]), name=name,
        message=summary, hardware_id=str(values.get('device', '')),
        values=[KeyValue(key=key, value=str(value)) for key, value in values.items()])
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def format_plan(plan: Plan) -> str:
    """Render a Plan for a terminal: status, steps, timings."""
    status = {v: k for k, v in vars(Plan).items() if k.startswith('STATUS_')}.get(plan.status)
    lines = [f'{status} {plan.request_id} (image {plan.header.frame_id or "-"} '
             f'{plan.header.stamp.sec}.{plan.header.stamp.nanosec:09d})']
    if plan.message:  # with STATUS_OK, a note: e.g. a server that ignored the plan schema
        lines.append(f"  {'note' if plan.status == Plan.STATUS_OK else 'reason'}: {plan.message}")
    if plan.steps and plan.form not in CLEAN_FORMS:
        lines.append(f'  form: {plan.form} (not the complete plan the model meant)')
    lines += [f'  {i}. {s.instruction}' + (f'  [{s.skill} {s.target}]'.rstrip()
                                          if s.skill or s.target else '')
              for i, s in enumerate(plan.steps, 1)]
    lines.append(f'  {plan.output_tokens} tokens, first after {plan.time_to_first_token:.3f} s,'
                 f' total {plan.total_time:.3f} s')
    return '\n'.join(lines)


def format_ground(response) -> str:
    """Render a Ground response for a terminal: the image, then a line per box."""
    stamp = response.image_header.stamp
    lines = [f'{len(response.boxes) // 4} found in {response.image_header.frame_id or "-"} '
             f'{stamp.sec}.{stamp.nanosec:09d}']
    for index in range(len(response.boxes) // 4):
        x1, y1, x2, y2 = response.boxes[4 * index:4 * index + 4]
        label = response.labels[index] if index < len(response.labels) else ''
        line = f'  {index + 1}. {x1:.1f} {y1:.1f} {x2:.1f} {y2:.1f}' + (f'  {label}' if label
                                                                        else '')
        if index < len(response.points):
            point, why = response.points[index], response.point_problems[index]
            line += f'  point {point.point.x:.3f} {point.point.y:.3f} {point.point.z:.3f} ' \
                f'({point.header.frame_id})' if point.header.frame_id else f'  no point: {why}'
        lines.append(line)
    return '\n'.join(lines)


def format_caption(msg: Caption) -> str:
    """Render a Caption for a terminal: source image stamp and frame, then the text."""
    stamp = f'{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}'
    return f'[{stamp} {msg.header.frame_id}] {msg.text}'


def format_progress(msg: PlanProgress) -> str:
    """Render a PlanProgress in one line: state, plan, attempt, and what changed."""
    state = {v: k for k, v in vars(PlanProgress).items() if k.startswith('STATE_')}.get(
        msg.state, str(msg.state))
    return f'{state[len("STATE_"):]} {msg.plan_id} (attempt {msg.attempt}): {msg.message}'


def _stamp(header) -> str:
    return f'{header.stamp.sec}.{header.stamp.nanosec:09d}'


def format_targets(msg: PlanTargets) -> str:
    """Render a PlanTargets in one line: each step's box (and camera), or why it has none."""
    def target(step) -> str:
        if len(step.box) != 4:
            return f'no box ({step.problem})' if step.problem else 'no box'
        where = f' in {step.camera}' if step.camera else ''
        return ' '.join(f'{v:.1f}' for v in step.box) + where
    steps = '; '.join(f'{i}. {target(step)}' for i, step in enumerate(msg.steps, 1))
    return f'{msg.request_id}: {steps or "no steps"}'


def format_sources(msg: ImageSources) -> str:
    """Render an ImageSources in one line: the task, then each camera's image and the skew."""
    images = ', '.join(f'{camera} {image.frame_id or "-"} {_stamp(image)}'
                       for camera, image in zip(msg.cameras, msg.images, strict=False))
    return f'{msg.task} {msg.request_id or "-"}: {images}; skew {msg.skew:.3f} s'

