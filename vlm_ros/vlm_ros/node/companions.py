"""What goes out just before an answer, each on its own topic: the messages of one outcome.

Released messages keep their type hashes, so what a Plan, Caption or answer gained later
(confidences, arguments, targets, features, every camera's image) is a message of its own,
joined to the answer by request_id or header. Topics publishes them (topics.py); a function
that returns None has nothing to publish this time.
"""

from collections.abc import Callable
from functools import cache
from typing import Optional

from vlm_ros_msgs.msg import (
    AnswerConfidence,
    Features,
    ImageSources,
    Plan,
    PlanArguments,
    PlanConfidence,
    PlanTargets,
)

from ..engine.plan_schema import takes_arguments
from .detections import ground_detections, plan_detections, vision_msgs
from .features_msg import features_msg
from .messages import (
    answer_confidence_msg,
    arguments_msg,
    confidence_msg,
    placed_boxes,
    sources_msg,
    targets_msg,
)


def companion_messages(outcome, plan: Optional[Plan], settings,
                       points: Callable[[object, list], list], detection_types=None) -> dict:
    """Return kind -> a function making that message, for what outcome's answer goes with.

    plan's PlanConfidence and PlanTargets (``points`` gives the boxes' 3D points), its
    PlanArguments while the skills name arguments and its Features where its result carries
    them (publish_features); or without plan, the AnswerConfidence of outcome's caption or
    ~/query answer; and the ImageSources of a job that took a frame per camera. With
    ``detection_types`` (vision_msgs.msg, where installed), a plan's boxed steps and every
    ~/ground answer's boxes as a Detection2DArray (detections.py).
    """
    if plan is None and outcome.job.task == 'ground':
        if detection_types is None:
            return {}
        return {'detections': lambda: ground_detections(detection_types, outcome, points(
            outcome, placed_boxes(outcome.result)))}
    if plan is None:
        messages = {'answer': lambda: answer_confidence_msg(outcome)}
    else:
        # Made once: the plan's targets (their depth read) serve plan_targets and detections.
        targets = cache(lambda: targets_msg(outcome, plan, points))
        messages = {'plan': lambda: confidence_msg(outcome, plan), 'targets': targets}
        if detection_types is not None:
            messages['detections'] = lambda: plan_detections(
                detection_types, plan, targets(),
                outcome.result.step_confidence if outcome.result is not None else (),
                outcome.header_of)
        if takes_arguments(settings.skills):
            messages['arguments'] = lambda: arguments_msg(outcome, plan)
        if outcome.result is not None and outcome.result.features is not None:
            messages['features'] = lambda: features_msg(outcome, plan.header, plan.request_id,
                                                        settings, plan.model)
    if outcome.job.sources:
        messages['sources'] = lambda: sources_msg(
            outcome, plan.header if plan is not None else outcome.header)
    return messages


def companion_publishers(create_publisher: Callable, qos, logger) -> tuple:
    """Create a publisher per kind of companion; return them with vision_msgs.msg (or None).

    The detections topic exists only where vision_msgs is installed; without it the node
    says so once, at configure.
    """
    publishers = {
        'plan': create_publisher(PlanConfidence, 'plan_confidence', qos),
        'arguments': create_publisher(PlanArguments, 'plan_arguments', qos),
        'targets': create_publisher(PlanTargets, 'plan_targets', qos),
        'answer': create_publisher(AnswerConfidence, 'answer_confidence', qos),
        'sources': create_publisher(ImageSources, 'image_sources', qos),
        'features': create_publisher(Features, '~/features', qos)}
    types = vision_msgs()
    if types is None:
        logger.info('vision_msgs is not installed: no detections topic (the boxes are on '
                    'plan_targets and in ~/ground answers)')
    else:
        publishers['detections'] = create_publisher(types.Detection2DArray, 'detections', qos)
    return publishers, types
