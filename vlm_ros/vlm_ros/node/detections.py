"""Boxes as vision_msgs/Detection2DArray, for the perception tools that read that type.

vision_msgs is installed on every ROS 2 distro but is no requirement of the node: where it is
missing, the node has no detections topic and says so once at configure, and the boxes still
go out on plan_targets and in ~/ground's responses. Each Detection2D carries one box: its
centre and size in the source image's pixels (a point: size 0), its header that image's (with
several cameras, of the camera the box is in), the phrase (or the label the model gave the
box) or step target as class_id, the answer's confidence as score, and, where use_depth found
one, the box's 3D point as the hypothesis pose's position (in the camera's optical frame, the
header's frame_id).
"""

import math
from collections.abc import Callable
from typing import Optional

from geometry_msgs.msg import PoseWithCovariance

from ..engine.grounding import without_boxes
from .messages import box_labels, placed_boxes

# covariance[0] of a hypothesis without a 3D point: unknown, as sensor_msgs/Imu marks it
NO_POSE_COVARIANCE = -1.0


def vision_msgs():
    """Return the vision_msgs.msg module, or None where vision_msgs is not installed."""
    try:
        from vision_msgs import msg
    except ImportError:
        return None
    return msg


def score(mean_log_prob: float) -> float:
    """Return a detection's score: its answer's mean token probability (NaN when unknown).

    NaN, as the confidence topics have it: a 0 would read as a sure miss.
    """
    return math.exp(mean_log_prob) if not math.isnan(mean_log_prob) else math.nan


def plan_detections(types, plan, targets, step_confidence: tuple, header_of: Callable):
    """Build the Detection2DArray of a Plan's boxed steps from its PlanTargets (None: no box).

    Each step's label is its target's words (without the box the model wrote in it), or its
    instruction where it names none;
    ``header_of(camera)`` gives the header of the image of the camera its box is in.
    """
    found = [(index, without_boxes(step.target) or step.instruction, target.box,
              score(step_confidence[index][0]) if index < len(step_confidence) else math.nan,
              target.point, header_of(target.camera))
             for index, (step, target) in enumerate(zip(plan.steps, targets.steps, strict=True))
             if len(target.box) == 4]
    return detections_msg(types, plan.header, plan.request_id, found) if found else None


def ground_detections(types, outcome, points: list):
    """Build the Detection2DArray of a ~/ground answer: every box, even none, for its phrase.

    points holds each box's (PointStamped or None, reason), as the response gets them. A box's
    label is what the model named it (several boxes: 'red block', 'blue block'), else the phrase.
    """
    placed = placed_boxes(outcome.result)
    labels = box_labels(outcome.result)
    confidence = score(outcome.result.confidence[0])
    pointed = [point for point, _ in points] + [None] * (len(placed) - len(points))  # no depth
    return detections_msg(types, outcome.header, outcome.job.request_id, [
        (index, label or outcome.job.text, box, confidence, point, outcome.header_of(camera))
        for index, ((box, camera), label, point) in enumerate(zip(placed, labels, pointed,
                                                                  strict=True))])


def detections_msg(types, header, request_id: str, found: list):
    """Build a Detection2DArray of found: (index, label, box, score, point, header).

    box is (x1, y1, x2, y2) in the pixels of the image of header; point a PointStamped or
    None. A detection's id is request_id/index, which joins it to its Plan or ~/ground answer
    and names the step (or the answer's box) it is.
    """
    return types.Detection2DArray(header=header, detections=[
        _detection(types, image_header, f'{request_id}/{index}', label, box, confidence, point)
        for index, label, box, confidence, point, image_header in found])


def _detection(types, header, ident: str, label: str, box, confidence: float,
               point: Optional[object]):
    x1, y1, x2, y2 = (float(v) for v in box)
    bbox = types.BoundingBox2D(size_x=x2 - x1, size_y=y2 - y1)
    bbox.center.position.x, bbox.center.position.y = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    pose = PoseWithCovariance()
    if point is not None and point.header.frame_id:
        pose.pose.position = point.point
    else:
        pose.covariance[0] = NO_POSE_COVARIANCE
    hypothesis = types.ObjectHypothesisWithPose(
        hypothesis=types.ObjectHypothesis(class_id=label, score=confidence), pose=pose)
    return types.Detection2D(header=header, id=ident, bbox=bbox, results=[hypothesis])
