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


def write_recorded_bag(path):
    """Write what a live node would have answered: Plans (one per instruction) and Captions."""
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
        for offset, stamp, text, total in captions:
            messages.append((offset, caption_conn, bags.serialize(
                'vlm_ros_msgs/msg/Caption', header=bags.header(stamp, 'camera'), text=text,
                model='tiny-live', total_time=total)))
        for offset, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, REC0 + int(offset * SECOND), data)
    return path
