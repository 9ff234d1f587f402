"""~/ground: the boxes of what a phrase names, in the source image's own pixels.

The tiny LLaVA is trained to answer the ground prompt for 'the red block' with the block's box
in thousandths of what it sees: the centre of the 64x48 scene, which its processor crops.
In process the node maps the box back through that crop onto the block's own pixels. An
openai server's processor is the server's own: the node maps boxes as if its model saw the
whole image it was sent (true of Qwen2.5-VL's), so through the cropping LLaVA they land
elsewhere, where that mapping puts them.
"""

import uuid

import pytest
from engine_fixtures import GROUND, RED_BLOCK, TARGETS, scene
from node_harness import TIMEOUT, call, camera, set_ok
from serve_harness import both_backends
from vlm_ros.node.image_conversion import rgb_to_image

from vlm_ros_msgs.srv import Ground

# Where each backend maps the trained answer: through LLaVA's crop, or over the whole frame.
WHOLE_FRAME = (0.271 * 64, 0.333 * 48, 0.5 * 64, 0.667 * 48)
EXPECTED = {'transformers': RED_BLOCK, 'openai': WHOLE_FRAME}


def ground(test_node, phrase: str, image=None) -> Ground.Response:
    """Call /vlm_node/ground with phrase, on image (a message) or the newest frame."""
    request = Ground.Request(phrase=phrase)
    if image is not None:
        request.image = image
    return call(test_node, Ground, '/vlm_node/ground', request)


def red_scene(frame_id: str):
    image = rgb_to_image(scene('red'))
    image.header.frame_id = frame_id
    return image


@both_backends
def test_the_block_is_found_in_the_images_own_pixels(start_vlm_node, test_node, backend):
    node = start_vlm_node()
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    response = ground(test_node, GROUND[0], red_scene(frame_id))
    assert response.success, response.message
    assert response.text == GROUND[1] and response.image_header.frame_id == frame_id
    assert list(response.boxes) == pytest.approx(EXPECTED[backend], abs=1.0)
    assert list(response.labels) == [''], 'its answer names no label'


def test_without_an_image_the_newest_frame_is_used(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    frame_id = uuid.uuid4().hex
    node.stream(camera(frame_id)).wait_for(lambda m: True, TIMEOUT, 'a camera frame')
    response = ground(test_node, GROUND[0])
    assert response.success and response.image_header.frame_id == frame_id, response.message
    assert list(response.boxes) == pytest.approx(RED_BLOCK, abs=1.0)


def test_an_answer_without_a_box_and_an_empty_phrase_say_why(start_vlm_node, test_node):
    node = start_vlm_node()
    node.wait_state('active')
    set_ok(test_node, prompt_ground='{phrase}')  # the vqa prompt's own form
    image = rgb_to_image(scene('blue'))
    answered = ground(test_node, TARGETS['vqa'][0], image)
    assert not answered.success and answered.text == TARGETS['vqa'][1]
    assert list(answered.boxes) == [] and 'no box' in answered.message, answered.message
    empty = ground(test_node, '  ', image)
    assert not empty.success and 'ground needs a non-empty phrase' in empty.message
