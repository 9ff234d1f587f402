"""Recordings the vlm_eval tests read: camera frames, instructions, and a live node's answers."""

import numpy as np
import vlm_ros.bag.storage as bags
from engine_fixtures import PLAN_JSON, TARGETS, scene

T0 = 1_700_000_000 * 10**9  # bag log time of the start of the recording


SECOND = 10**9


FRAME_TIMES = [T0 + 1 * SECOND, T0 + 2 * SECOND, T0 + 3 * SECOND]


STAMPS = [t - 5_000_000 for t in FRAME_TIMES]  # header stamps: 5 ms before logging


COLOURS = ['red', 'blue', 'green']


HOSTILE = '<b>put</b> the red block in the bin & <script>x</script>'


INSTRUCTIONS = [(T0 + SECOND // 2, TARGETS['plan'][0]),  # before any frame: NO_IMAGE
                (T0 + SECOND + SECOND // 2, TARGETS['plan'][0]),  # -> frame 0 (red)
                (T0 + 2 * SECOND + SECOND // 2, HOSTILE),  # -> frame 1 (blue)
                (T0 + 3 * SECOND, 'put the green block in the bin')]  # same ns as frame 2


IMAGE_TOPIC, INSTRUCTION_TOPIC = '/camera/image_raw', '/robot/instruction'


def image_fields(rgb, stamp):
    height, width = rgb.shape[:2]
    return {'header': bags.header(stamp, 'camera'), 'height': height, 'width': width,
            'encoding': 'rgb8', 'is_bigendian': 0, 'step': width * 3,
            'data': np.ascontiguousarray(rgb).reshape(-1)}


def write_input_bag(path, compressed=False, extra_image_topic=None):
    """Write the test recording: three frames, the instructions, and a distracting String."""
    import cv2

    with bags.bag_writer(path) as writer:
        msgtype = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
        images = bags.add_topic(writer, IMAGE_TOPIC, msgtype)
        text = bags.add_topic(writer, INSTRUCTION_TOPIC, bags.STRING_TYPE)
        status = bags.add_topic(writer, '/robot/status', bags.STRING_TYPE)
        extra = extra_image_topic and bags.add_topic(writer, extra_image_topic, msgtype)
        messages = []
        for when, stamp, colour in zip(FRAME_TIMES, STAMPS, COLOURS, strict=True):
            rgb = scene(colour)
            if compressed:
                data = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))[1].reshape(-1)
                fields = {'header': bags.header(stamp, 'camera'), 'format': 'png', 'data': data}
            else:
                fields = image_fields(rgb, stamp)
            messages.append((when, images, bags.serialize(msgtype, **fields)))
            if extra:
                messages.append((when, extra, bags.serialize(msgtype, **fields)))
        for when, instruction in INSTRUCTIONS:
            messages.append((when, text, bags.serialize(bags.STRING_TYPE, data=instruction)))
        messages.append((T0, status, bags.serialize(bags.STRING_TYPE, data='ready')))
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)
    return path


REC0 = 5_000 * SECOND  # the recording of the answers runs on another clock


def write_recorded_bag(path, companions: bool = False):
    """Write what a live node would have answered: Plans (one per instruction) and Captions.

    companions: also what a node with cameras [head, wrist] publishes beside them (see
    _companions).
    """
    store = bags.typestore()
    step = store.types['vlm_ros_msgs/msg/PlanStep']
    steps = [step(instruction='pick up the red block', skill='pick', target='red block'),
             step(instruction='place it in the bin', skill='place', target='bin')]
    plans = [  # (log offset s, stamp, instruction, status, steps, text, total_time)
        (0.6, REC0 + 600 * 10**6, INSTRUCTIONS[0][1], 2, [], '', 0.001),
        (1.8, STAMPS[0], INSTRUCTIONS[1][1], 0, steps, PLAN_JSON, 0.25),
        (2.9, STAMPS[1], HOSTILE, 1, [], '<i>junk</i>', 0.375),
        (3.4, STAMPS[2], INSTRUCTIONS[3][1], 0, steps[:1], PLAN_JSON, 0.5)]
    captions = [(1.2, STAMPS[0], 'a red block on a grey table', 0.125),
                (3.2, STAMPS[2], 'a green block', 0.25)]
    with bags.bag_writer(path) as writer:
        plan_conn = bags.add_topic(writer, '/robot1/plan', 'vlm_ros_msgs/msg/Plan')
        caption_conn = bags.add_topic(writer, '/robot1/caption', 'vlm_ros_msgs/msg/Caption')
        messages = []
        for number, (offset, stamp, text, status, plan_steps, raw, total) in enumerate(plans):
            messages.append((offset, plan_conn, bags.serialize(
                'vlm_ros_msgs/msg/Plan', header=bags.header(stamp, 'camera'),
                request_id=str(number), instruction=text, status=status,
                message='no image' if status == 2 else '', steps=plan_steps, text=raw,
                model='tiny-live', time_to_first_token=total / 4 if raw else 0.0,
                total_time=total, output_tokens=7 if raw else 0,
                form='json' if plan_steps else 'none')))
        if companions:
            messages += _companions(store, writer)
        for offset, stamp, text, total in captions:
            messages.append((offset, caption_conn, bags.serialize(
                'vlm_ros_msgs/msg/Caption', header=bags.header(stamp, 'camera'), text=text,
                model='tiny-live', total_time=total)))
        for offset, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, REC0 + int(offset * SECOND), data)
    return path


WRIST_TOPIC = '/wrist/image_raw'
# The wrist camera's log times: its stamps lie 30 ms after the head's first frame, then 0.4 s
# after the second (no pair within max_skew 0.1 s until the head's third frame), then 0.1 s
# before the third. Stamps are 5 ms before logging, as the head camera's.
WRIST_TIMES = [T0 + SECOND + 30_000_000, T0 + 2 * SECOND + 400_000_000,
               T0 + 2 * SECOND + 900_000_000]
WRIST_STAMPS = [t - 5_000_000 for t in WRIST_TIMES]


def wrist_scene(number: int):
    """Draw the wrist camera's frame number: its own size, lighter with each number."""
    image = np.full((30, 40, 3), 60 + 40 * number, dtype=np.uint8)
    image[10:20, 15:25] = (250, 250, 0)
    return image


def write_camera_bag(path, ros1: bool = False):
    """Write the head camera's frames and instructions of write_input_bag, plus a wrist camera.

    ros1: a ROS 1 bag (rosbags' ROS 1 writer, Noetic types), else rosbag2 (MCAP).
    """
    frames = [(when, IMAGE_TOPIC, scene(colour), stamp) for when, stamp, colour in
              zip(FRAME_TIMES, STAMPS, COLOURS, strict=True)]
    frames += [(when, WRIST_TOPIC, wrist_scene(number), stamp) for number, (when, stamp) in
               enumerate(zip(WRIST_TIMES, WRIST_STAMPS, strict=True))]
    if ros1:
        _write_ros1(path, frames)
        return path
    with bags.bag_writer(path) as writer:
        topics = {topic: bags.add_topic(writer, topic, 'sensor_msgs/msg/Image')
                  for topic in (IMAGE_TOPIC, WRIST_TOPIC)}
        text = bags.add_topic(writer, INSTRUCTION_TOPIC, bags.STRING_TYPE)
        messages = [(when, topics[topic], bags.serialize('sensor_msgs/msg/Image',
                                                         **image_fields(rgb, stamp)))
                    for when, topic, rgb, stamp in frames]
        messages += [(when, text, bags.serialize(bags.STRING_TYPE, data=instruction))
                     for when, instruction in INSTRUCTIONS]
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)
    return path


def _write_ros1(path, frames: list) -> None:
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    with Writer(path) as writer:
        topics = {topic: writer.add_connection(topic, 'sensor_msgs/msg/Image', typestore=store)
                  for topic in (IMAGE_TOPIC, WRIST_TOPIC)}
        text = writer.add_connection(INSTRUCTION_TOPIC, bags.STRING_TYPE, typestore=store)
        messages = []
        for when, topic, rgb, stamp in frames:
            height, width = rgb.shape[:2]
            msg = types['sensor_msgs/msg/Image'](
                header=types['std_msgs/msg/Header'](
                    seq=0, stamp=types['builtin_interfaces/msg/Time'](
                        sec=stamp // SECOND, nanosec=stamp % SECOND), frame_id=topic[1:6]),
                height=height, width=width, encoding='rgb8', is_bigendian=0, step=width * 3,
                data=np.ascontiguousarray(rgb).reshape(-1))
            messages.append((when, topics[topic],
                             store.serialize_ros1(msg, 'sensor_msgs/msg/Image')))
        messages += [(when, text, store.serialize_ros1(types[bags.STRING_TYPE](data=instruction),
                                                        bags.STRING_TYPE))
                     for when, instruction in INSTRUCTIONS]
        for when, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, when, data)


TARGET_BOX = (10.0, 12.0, 30.0, 40.0)  # plan 1's first step, in the head frame's pixels
WRIST_BOX = (15.0, 10.0, 25.0, 20.0)  # its second step's, in the wrist frame's (40x30)


def _companions(store, writer) -> list:
    """Return the messages a node with cameras [head, wrist] publishes beside its answers.

    Plan 1's PlanTargets (a box on its first step in the head camera's image, one on its second
    in the wrist camera's) and the ImageSources of plans 1 and 2 and of the first caption;
    plan 2's wrist stamp is of no frame in the input recording.
    """
    types = store.types

    def header(stamp):
        return types['std_msgs/msg/Header'](stamp=types['builtin_interfaces/msg/Time'](
            sec=stamp // SECOND, nanosec=stamp % SECOND), frame_id='camera')

    def sources(stamps, request_id, task, skew):
        return bags.serialize(
            'vlm_ros_msgs/msg/ImageSources', header=bags.header(stamps[0], 'camera'),
            request_id=request_id, task=task, cameras=['head', 'wrist'],
            images=[header(stamp) for stamp in stamps], skew=skew)

    point = types['geometry_msgs/msg/PointStamped'](
        header=header(0), point=types['geometry_msgs/msg/Point'](x=0.0, y=0.0, z=0.0))
    steps = [types['vlm_ros_msgs/msg/StepTarget'](box=np.array(box, dtype=np.float32),
                                                  camera=camera, problem='', point=point,
                                                  point_problem='')
             for box, camera in ((TARGET_BOX, 'head'), (WRIST_BOX, 'wrist'))]
    targets = bags.add_topic(writer, '/robot1/plan_targets', 'vlm_ros_msgs/msg/PlanTargets')
    images = bags.add_topic(writer, '/robot1/image_sources', 'vlm_ros_msgs/msg/ImageSources')
    return [(1.79, targets, bags.serialize('vlm_ros_msgs/msg/PlanTargets',
                                           header=bags.header(STAMPS[0], 'camera'),
                                           request_id='1', steps=steps)),
            (1.79, images, sources([STAMPS[0], WRIST_STAMPS[0]], '1', 'plan', 0.03)),
            (2.89, images, sources([STAMPS[1], STAMPS[1] + 7], '2', 'plan', 7e-9)),
            (1.19, images, sources([STAMPS[0], WRIST_STAMPS[0]], '', 'caption', 0.03))]
