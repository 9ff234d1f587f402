"""What a live vlm_node published beside its answers: the steps' boxes and every camera's image.

A Plan's PlanTargets (plan_targets) and ImageSources (image_sources, with several cameras) are
separate messages joined to it by request_id; a Caption's ImageSources is joined by its header
and task. vlm_eval --recorded reads them so that a live run's records carry the same boxes and
per-camera frames as an offline run's.
"""

from dataclasses import dataclass, field

from ..bag.storage import SOURCES_TYPE, TARGETS_TYPE, stamp_ns, time_ns
from ..engine import VlmError
from .inputs import BagInputs, frames_by_stamp
from .messages import read_messages
from .records import image_info


@dataclass
class Companions:
    """The boxes per Plan (request_id) and the ImageSources per Plan or per Caption."""

    # request_id -> ((x1, y1, x2, y2) or None per step, the camera of each box per step)
    boxes: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)  # request_id, or (stamp_ns, task) -> message


def read_companions(reader) -> Companions:
    """Read every PlanTargets and ImageSources message of an answers recording."""
    found = Companions()
    connections = [c for c in reader.connections if c.msgtype in (TARGETS_TYPE, SOURCES_TYPE)]
    if not connections:  # rosbags reads every message for an empty list
        return found
    for connection, _, msg in read_messages(reader, connections):
        if connection.msgtype == TARGETS_TYPE:
            found.boxes[msg.request_id] = (
                tuple(tuple(float(v) for v in step.box) if len(step.box) == 4 else None
                      for step in msg.steps),
                tuple(getattr(step, 'camera', '') for step in msg.steps))  # older: none
        else:
            found.sources[msg.request_id or (stamp_ns(msg), msg.task)] = msg
    return found


class CameraFrames:
    """The input recording's frames of each camera by stamp: an ImageSources to record fields."""

    def __init__(self, inputs: BagInputs):
        self._cameras = inputs.cameras
        self._by_stamp = {camera.name: frames_by_stamp(camera.frames)
                          for camera in inputs.cameras}

    def check(self, sources: dict, path) -> None:
        """Raise VlmError where the answers at path cannot give each --camera its frames.

        The node names its cameras in image_sources, the first heading every answer (its
        header, its boxes): the answers need them, under the names --camera gives, that one
        first.
        """
        if not self._cameras:
            return
        if not sources:
            raise VlmError('bad_input', f'{path} has no image_sources messages: --camera needs '
                           'the answers of a node with several cameras, recorded with them '
                           '(vlm_replay --record records them)')
        named = {name for msg in sources.values() for name in msg.cameras}
        missing = [camera.name for camera in self._cameras if camera.name not in named]
        firsts = sorted({msg.cameras[0] for msg in sources.values() if msg.cameras})
        if missing or self._cameras[0].name not in firsts:
            raise VlmError('bad_input', f'the node named its cameras {", ".join(sorted(named))} '
                           f'(first: {", ".join(firsts)}); give --camera those names, the '
                           'first one first')

    def fields(self, source) -> dict:
        """Return a record's ``images`` and ``skew`` from source ({}: one camera, or none)."""
        if not self._cameras or source is None:
            return {}
        headers = dict(zip(source.cameras, source.images, strict=False))
        images = []
        for camera in self._cameras:
            header = headers.get(camera.name)
            frame = None if header is None else self._by_stamp[camera.name].get(
                time_ns(header.stamp))
            images.append(image_info(camera.topic, frame, camera.name) or
                          {'camera': camera.name, 'topic': camera.topic, 'frame': None})
        return {'images': images, 'skew': float(source.skew)}
