"""What goes out just before an answer, each on its own topic: the messages of one outcome.

Released messages keep their type hashes, so what a Plan, Caption or answer gained later
(confidences, arguments, targets, features, every camera's image) is a message of its own,
joined to the answer by request_id or header. Topics publishes them (topics.py).
"""

from collections.abc import Callable
from typing import Optional

from vlm_ros_msgs.msg import Plan

from ..engine.plan_schema import takes_arguments
from .features_msg import features_msg
from .messages import (
    answer_confidence_msg,
    arguments_msg,
    confidence_msg,
    sources_msg,
    targets_msg,
)


def companion_messages(outcome, plan: Optional[Plan], settings,
                       points: Callable[[object, list], list]) -> dict:
    """Return kind -> a function making that message, for what outcome's answer goes with.

    plan's PlanConfidence and PlanTargets (``points`` gives the boxes' 3D points), its
    PlanArguments while the skills name arguments and its Features where its result carries
    them (publish_features); or without plan, the AnswerConfidence of outcome's caption or
    ~/query answer; and the ImageSources of a job that took a frame per camera.
    """
    if plan is None:
        messages = {'answer': lambda: answer_confidence_msg(outcome)}
    else:
        messages = {'plan': lambda: confidence_msg(outcome, plan),
                    'targets': lambda: targets_msg(outcome, plan, points)}
        if takes_arguments(settings.skills):
            messages['arguments'] = lambda: arguments_msg(outcome, plan)
        if outcome.result is not None and outcome.result.features is not None:
            messages['features'] = lambda: features_msg(outcome, plan.header, plan.request_id,
                                                        settings, plan.model)
    if outcome.job.sources:
        messages['sources'] = lambda: sources_msg(
            outcome, plan.header if plan is not None else outcome.header)
    return messages
