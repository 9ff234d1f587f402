"""The camera input: subscriptions by image_transport, and what to say when no camera is there.

With ``image_transport: auto`` (the default) the node subscribes to both ``image`` and
``image/compressed`` and uses whichever publishes, so a user replaying a compressed camera need
not know the parameter. A driver that publishes both (image_transport publishers do) would give
every frame twice: raw frames win, and compressed ones are used only while no raw frame has
arrived for RAW_PREFERRED seconds. Subscribing to both costs the bandwidth of both when both
publish; set ``raw`` or ``compressed`` to take one.

When a request finds no image, the most common cause is a camera on another topic name. The
hint names the topics the node listens to that nobody publishes, and the topics on the graph
that do carry images, so the remap to write is in the message. The next most common: a camera
publishes where the node listens, and no frame has arrived since it subscribed. With Fast DDS's
default transport, frames over 512 KB reached a best-effort subscriber on the same machine 1 to
2 times in 50: the hint then names the publishers and the profile to start the driver with
(vlm_ros's own processes take it by themselves, transport.py).
"""

import time
from functools import partial

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..transport import FAST_DDS, large_frames_profile, profile_variable
from .depth import DEPTH_HISTORY, points_of
from .image_conversion import compressed_to_rgb, image_to_rgb
from .messages import stamp_seconds

RAW_PREFERRED = 1.0  # s since the last raw frame during which compressed frames are ignored
IMAGE_TYPE_NAMES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


def _type_name(msg_type) -> str:
    """Return the graph's name of a message class: sensor_msgs/msg/Image."""
    return f'{msg_type.__module__.split(".")[0]}/msg/{msg_type.__name__}'


def _node_name(info) -> str:
    """Return the full name of the node of a graph endpoint: /namespace/name."""
    return f'{info.node_namespace.rstrip("/")}/{info.node_name}'


def transport_fix(rmw: str) -> str:
    """Return the environment to start a camera driver with ('' when no profile applies)."""
    path = large_frames_profile()
    return f'{profile_variable()}={path}' if rmw in FAST_DDS and path else ''


def lost_hint(publishers: dict, fix: str, best_effort: tuple = (),
              since: str = 'the node subscribed') -> str:
    """Say that frames are published (topic -> publishing nodes) but none arrived, and why.

    ``best_effort``: the publishers ('TOPIC (NODE)') that are best effort while the subscription
    is reliable (image_reliability): DDS never matches them, which is then the reason.
    """
    named = ', '.join(f'{topic} ({", ".join(sorted(nodes))})'
                      for topic, nodes in sorted(publishers.items()))
    many = len(publishers) > 1 or any(len(nodes) > 1 for nodes in publishers.values())
    text = f'{named} {"have publishers" if many else "has a publisher"}, but no frame has ' \
        f'arrived since {since}'
    if best_effort:
        return (f'{text}: {", ".join(best_effort)} publish{"" if len(best_effort) > 1 else "es"}'
                ' best effort, which a reliable subscription never receives; set '
                'image_reliability:=best_effort')
    text += ': what is published is lost on the way'
    if not fix:
        return text
    return (f"{text}; if its frames are over 512 KB, Fast DDS's default transport loses most "
            f'of them: start the camera driver with {fix}')


class ImageInput:
    """One camera's subscriptions (``topic``, ``topic``/compressed), feeding a FrameStore.

    ``node`` lends the operations that create and destroy the subscriptions (in ``group``) and
    that look at the graph for the hint; the node itself is not kept.
    """

    def __init__(self, node, frames, group, topic: str = 'image'):
        self._topic = topic
        self._subscribe = partial(node.create_subscription, callback_group=group)
        self._destroy_subscription = node.destroy_subscription
        self._publishers_info = node.get_publishers_info_by_topic
        self._topic_names_and_types = node.get_topic_names_and_types
        self._logger = node.get_logger()
        self._frames = frames
        self._subs, self._depth_subs = [], []
        self.depths, self.info = (), None  # recent depth Images, newest CameraInfo (use_depth)
        self._last_raw = -float('inf')
        self._received = 0  # frames since subscribe(), or since the camera was last silent
        self._since = 'the node subscribed'  # what _received counts from, for the hint
        self._reliable = False  # image_reliability: best-effort publishers never match it
        self._max_pixels = 0  # max_image_pixels (0: no limit), depth images' too
        self._fix = transport_fix(get_rmw_implementation_identifier())

    def subscribe(self, transport: str, reliable: bool, max_pixels: int,
                  depth: bool = False) -> None:
        """(Re)subscribe for transport 'raw', 'compressed' or 'auto'.

        With depth, also to the aligned depth image and camera_info beside it (depth.py).
        """
        self.close()
        self._received, self._since = 0, 'the node subscribed'
        self._reliable, self._max_pixels = reliable, max_pixels
        qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        # A contiguous copy: OpenCV makes it in ~0.2 ms at 1080p, numpy from a view 7-15 ms.
        self._frames.set_converters({
            'raw': partial(image_to_rgb, copy=True, max_pixels=max_pixels),
            'compressed': partial(compressed_to_rgb, max_pixels=max_pixels)})
        if transport in ('raw', 'auto'):
            self._subs.append(self._subscribe(Image, self._topic, self._on_raw, qos))
        if transport in ('compressed', 'auto'):
            self._subs.append(self._subscribe(CompressedImage, f'{self._topic}/compressed',
                                              self._on_compressed, qos))
        if depth:
            depth_topic, info_topic = self.depth_topics
            self._depth_subs = [self._subscribe(Image, depth_topic, self._on_depth, qos),
                                self._subscribe(CameraInfo, info_topic, self._on_info, qos)]

    @property
    def depth_topics(self) -> tuple:
        """Return the aligned depth image's and camera_info's topics beside this camera's.

        image -> depth/image and camera_info; head/image -> head/depth/image, head/camera_info.
        """
        prefix = self._topic[:-len('image')]
        return f'{prefix}depth/image', f'{prefix}camera_info'

    def depth_names(self) -> tuple:
        """Return the depth topics as subscribed, remaps applied: the names a user must fix."""
        return tuple(sub.topic_name for sub in self._depth_subs) or self.depth_topics

    def close(self) -> None:
        """Destroy the subscriptions (deactivate, or before subscribing anew)."""
        for sub in self._subs + self._depth_subs:
            self._destroy_subscription(sub)
        self._subs, self._depth_subs = [], []  # hint() looks at the image's (_subs) alone
        self.depths, self.info = (), None

    def _on_depth(self, msg) -> None:
        # Larger than any frame the node takes, it could never be aligned to one: DEPTH_HISTORY
        # of them, of any size, were kept. (8 bytes: a 64FC1 pixel, the widest depth one.)
        if self._max_pixels and (msg.width * msg.height > self._max_pixels or
                                 len(msg.data) > 8 * self._max_pixels):
            self._logger.warning(
                f'depth image of {msg.width}x{msg.height} ({len(msg.data)} bytes) not kept: '
                f'over max_image_pixels {self._max_pixels}, it cannot match a frame',
                throttle_duration_sec=5.0)
            return
        # A new tuple each time: the worker reads it while this callback replaces it.
        self.depths = (*self.depths[1 - DEPTH_HISTORY:], msg)

    def _on_info(self, msg) -> None:
        self.info = msg

    def _on_raw(self, msg) -> None:
        self._received += 1
        self._last_raw = time.monotonic()
        self._frames.put(msg.header, stamp_seconds(msg.header.stamp), msg, 'raw')

    def _on_compressed(self, msg) -> None:
        self._received += 1
        if time.monotonic() - self._last_raw < RAW_PREFERRED and len(self._subs) > 1:
            return  # the same camera's raw frames are arriving: use those
        self._frames.put(msg.header, stamp_seconds(msg.header.stamp), msg, 'compressed')

    def silent_topics(self) -> list:
        """Return the topics subscribed to that no publisher of their type serves.

        A CompressedImage remapped onto ``image`` has a publisher there, of the wrong type:
        DDS never matches it, so the topic is as silent as one without publishers.
        """
        return [sub.topic_name for sub in self._subs
                if not any(info.topic_type == _type_name(sub.msg_type) for info in
                           self._publishers_info(sub.topic_name))]

    def hint(self) -> str:
        """Say why no image may come ('' while a publisher is there and frames have come).

        A camera that went silent must send frames again before the hint clears: a restarted
        driver whose frames are lost (large frames without the transport profile) is named.
        """
        silent = self.silent_topics()
        if silent and len(silent) == len(self._subs):
            if self._received:  # frames came, then the camera went
                self._received, self._since = 0, 'the camera was last silent'
            return self._silent_hint(silent)
        if not self._subs or self._received:
            return ''
        found = {sub.topic_name: [info for info in self._publishers_info(sub.topic_name)
                                  if info.topic_type == _type_name(sub.msg_type)]
                 for sub in self._subs}
        publishers = {topic: {_node_name(info) for info in infos}
                      for topic, infos in found.items() if infos}
        best_effort = tuple(sorted(
            f'{topic} ({_node_name(info)})' for topic, infos in found.items() for info in infos
            if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT)) \
            if self._reliable else ()
        return lost_hint(publishers, self._fix, best_effort, self._since)

    def _silent_hint(self, silent: list) -> str:
        """Name the silent topics and the topics on the graph that carry images."""
        carrying = sorted({f'{name} ({info.topic_type.rsplit("/", 1)[-1]})'
                           for name, kinds in self._topic_names_and_types()
                           if set(kinds) & set(IMAGE_TYPE_NAMES)
                           for info in self._publishers_info(name)
                           if info.topic_type in IMAGE_TYPE_NAMES})
        where = (f'images are published on {", ".join(carrying)}: remap {self._topic}:=TOPIC '
                 f'for Image, {self._topic}/compressed:=TOPIC for CompressedImage' if carrying
                 else 'no topic on the graph carries images')
        return f'nothing publishes on {" or ".join(silent)}; {where}'


class CameraInputs:
    """An ImageInput per camera of a FrameSet: NAME/image, or image for the one unnamed camera."""

    def __init__(self, node, frames, group):
        self._names = tuple(frames.names)
        self._inputs = [ImageInput(node, store, group, f'{name}/image' if name else 'image')
                        for name, store in zip(frames.names, frames.stores, strict=True)]
        if any(self._names):
            _warn_unread_remaps(node, [f'{name}/image' for name in self._names])

    def subscribe(self, transport: str, reliable: bool, max_pixels: int,
                  depth: bool = False) -> None:
        """(Re)subscribe every camera (ImageInput.subscribe), with depth each one's depth too."""
        for image_input in self._inputs:
            image_input.subscribe(transport, reliable, max_pixels, depth)

    def target_points(self, outcome, placed: list, settings) -> list:
        """Return (PointStamped or None, reason) per (box, camera) of outcome, with use_depth.

        Each box's point from its camera's recent depth Images and newest CameraInfo, beside
        the image of that camera the job used (depth.py); camera '' is the first (or only).
        """
        if not settings.use_depth:
            return []
        sizes = dict(outcome.job.frame_sizes)
        found = {}
        for camera in dict.fromkeys(camera for _, camera in placed):
            image_input = self._inputs[self._names.index(camera) if camera in self._names
                                       else 0]
            indices = [i for i, (_, named) in enumerate(placed) if named == camera]
            found.update(zip(indices, points_of(
                [placed[i][0] for i in indices], outcome.header_of(camera), sizes.get(camera),
                image_input.depths, image_input.info, settings.max_skew,
                image_input.depth_names()), strict=True))
        return [found[i] for i in range(len(placed))]

    def close(self) -> None:
        """Destroy every camera's subscriptions."""
        for image_input in self._inputs:
            image_input.close()

    def hint(self, names=None) -> str:
        """Say why images may not come from the cameras named (every one: None), or ''.

        Each camera's hint names its topics and then what the graph carries, which is the
        same for every camera: it is said once.
        """
        clauses = []
        for name, image_input in zip(self._names, self._inputs, strict=True):
            if names is None or name in names:
                clauses += [clause for clause in image_input.hint().split('; ')
                            if clause and clause not in clauses]
        return '; '.join(clauses)


def _warn_unread_remaps(node, topics: list) -> None:
    """Warn of image:=TOPIC (or image/compressed:=) when named cameras read NAME/image instead.

    rcl ignores a remap that no topic of the node uses: the camera the user pointed at would
    never be read, and the hint would only say that the cameras' own topics are silent.
    """
    resolve = node.resolve_topic_name
    remapped = [f'{topic}:={resolve(topic)}' for topic in ('image', 'image/compressed')
                if resolve(topic) != resolve(topic, only_expand=True)]
    if remapped:
        node.get_logger().warning(
            f'{", ".join(remapped)} has no effect: with cameras set, images come from '
            f'{", ".join(topics)}; remap those (NAME/image:=TOPIC)')
