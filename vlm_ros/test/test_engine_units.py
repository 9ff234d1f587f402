"""Engine stages alone: loading errors, images (resize, JPEG), prompts, backends, no ROS."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from vlm_ros.engine import EngineConfig, VlmError, make_engine
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.loader import classify_error, load, resolve_device, resolve_dtype
from vlm_ros.engine.preprocess import check_image, encode_jpeg, resize_max_side
from vlm_ros.engine.prompts import load_templates, render_task


def test_missing_model_directory_names_model_and_device(tmp_path):
    missing = str(tmp_path / 'no_such_model')
    with pytest.raises(VlmError) as info:
        load(EngineConfig(model=missing, device='cpu', local_files_only=True))
    assert info.value.kind == 'not_found'
    assert missing in str(info.value) and "'cpu'" in str(info.value)


def test_unknown_hub_id_offline_is_not_found():
    with pytest.raises(VlmError) as info:
        load(EngineConfig(model='vlm-ros-test/does-not-exist', device='cpu',
                          local_files_only=True))
    assert info.value.kind == 'not_found'
    assert 'vlm-ros-test/does-not-exist' in str(info.value)


def test_unsupported_architecture(tmp_path, trained_tiny):
    from engine_fixtures import FAMILIES

    source = trained_tiny(FAMILIES[0])
    model_dir = tmp_path / 'odd'
    model_dir.mkdir()
    for item in source.iterdir():
        (model_dir / item.name).write_bytes(item.read_bytes())
    config = json.loads((model_dir / 'config.json').read_text())
    config['model_type'] = 'not_a_real_vlm'
    (model_dir / 'config.json').write_text(json.dumps(config))
    with pytest.raises(VlmError) as info:
        load(EngineConfig(model=str(model_dir), device='cpu', local_files_only=True))
    assert info.value.kind == 'unsupported', str(info.value)
    assert 'not_a_real_vlm' in str(info.value)


def test_out_of_memory_is_classified():
    assert classify_error(torch.OutOfMemoryError('CUDA out of memory. Tried to allocate')) == \
        'out_of_memory'
    assert classify_error(RuntimeError('something else')) == 'load_failed'


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the no-GPU message')
def test_cuda_without_gpu_says_so():
    with pytest.raises(VlmError, match='CUDA is not available'):
        resolve_device('cuda:0')
    assert resolve_device('auto') == torch.device('cpu')


def test_device_and_dtype_validation():
    with pytest.raises(VlmError, match='unknown device'):
        resolve_device('tpu')
    with pytest.raises(VlmError, match='unknown dtype'):
        resolve_dtype('int4', torch.device('cpu'))
    assert resolve_dtype('auto', torch.device('cpu')) == torch.float32
    assert resolve_dtype('bfloat16', torch.device('cpu')) == torch.bfloat16


def test_run_before_load_is_an_error():
    engine = VlmEngine(EngineConfig(model='unused'))
    assert not engine.is_loaded
    with pytest.raises(VlmError, match='not loaded'):
        engine.loaded  # noqa: B018 - the property raises


@pytest.mark.parametrize('image, reason', [
    (np.zeros((4, 4), np.uint8), 'HxWx3'),
    (np.zeros((4, 4, 4), np.uint8), 'HxWx3'),
    (np.zeros((0, 4, 3), np.uint8), 'empty'),
    (np.zeros((4, 4, 3), np.float32), 'uint8'),
    ([[1, 2, 3]], 'numpy array'),
])
def test_bad_images_are_rejected_with_reason(image, reason):
    with pytest.raises(VlmError, match=reason) as info:
        check_image(image)
    assert info.value.kind == 'bad_input'


@pytest.mark.parametrize('shape, max_side, expected', [
    ((480, 640, 3), 320, (320, 240)),
    ((1080, 1920, 3), 640, (640, 360)),
    ((640, 480, 3), 320, (240, 320)),
    ((100, 50, 3), 640, (50, 100)),   # never enlarged
    ((480, 640, 3), 0, (640, 480)),   # 0 = keep
])
def test_resize_keeps_aspect(shape, max_side, expected):
    assert resize_max_side(np.zeros(shape, np.uint8), max_side).size == expected


def test_jpeg_for_a_server_is_resized_like_the_local_input_and_keeps_colour_edges():
    image = np.full((480, 640, 3), 128, np.uint8)
    image[160:320, 200:330] = (220, 30, 30)
    local = np.asarray(resize_max_side(image, 320), dtype=int)
    sent = np.asarray(Image.open(io.BytesIO(encode_jpeg(image, 320, 90))), dtype=int)
    assert sent.shape == local.shape == (240, 320, 3)
    assert np.abs(sent - local).max() <= 12  # 4:2:0 chroma: off by 57 at the edges
    with pytest.raises(VlmError, match='HxWx3'):
        encode_jpeg(np.zeros((4, 4), np.uint8), 320, 90)


def test_make_engine_picks_the_backend():
    assert isinstance(make_engine(EngineConfig(model='unused')), VlmEngine)
    remote = make_engine(EngineConfig(model='m', backend='openai'))
    assert remote.model_name == 'm' and not remote.is_loaded and remote.concurrency == 4
    with pytest.raises(VlmError, match='unknown backend') as info:
        make_engine(EngineConfig(model='m', backend='grpc'))
    assert info.value.kind == 'bad_input'


def test_prompt_overrides_and_validation():
    templates = load_templates({'vqa': 'Q: {question} A:', 'caption': ''})
    assert render_task(templates, 'vqa', ' what? ') == 'Q: what? A:'
    assert render_task(templates, 'caption') == load_templates()['caption']
    assert 'red block' in render_task(templates, 'plan', 'pick up the red block')
    with pytest.raises(VlmError, match='must contain'):
        load_templates({'plan': 'no placeholder'})
    with pytest.raises(VlmError, match='invalid'):
        load_templates({'vqa': '{question} {nope}'})
    with pytest.raises(VlmError, match='unknown prompt task'):
        load_templates({'dance': 'x'})
    with pytest.raises(VlmError, match='non-empty'):
        render_task(templates, 'plan', '  ')


def test_engine_imports_without_rclpy():
    code = ('import sys; sys.modules["rclpy"] = None\n'
            'import vlm_ros.engine, vlm_ros.demo.tiny\n'
            'assert "rclpy" not in [m for m in sys.modules if sys.modules[m] is not None]\n'
            'print("ok")')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == 'ok', result.stderr


def test_processor_errors_become_bad_input_not_bare_exceptions(trained_tiny):
    from engine_fixtures import scene
    from vlm_ros.engine import Request

    # A keyword the engine passes itself: the processor call raises TypeError.
    engine = VlmEngine(EngineConfig(model=str(trained_tiny('llava')), device='cpu',
                                    processor_kwargs={'return_tensors': 'np'}))
    engine.load()
    with pytest.raises(VlmError) as info:
        engine.run([Request('caption', scene('red'))])
    assert info.value.kind == 'bad_input' and 'preprocessing failed' in str(info.value)


def test_run_time_update_changes_the_next_request_only_with_valid_templates():
    engine = make_engine(EngineConfig(model='m', backend='openai'))
    engine.update(max_new_tokens=5, prompts={'plan': 'Do: {instruction}'})
    assert engine.config.max_new_tokens == 5
    assert render_task(engine.templates, 'plan', 'x') == 'Do: x'
    with pytest.raises(VlmError, match='must contain'):
        engine.update(prompts={'plan': 'no placeholder'})
    assert render_task(engine.templates, 'plan', 'x') == 'Do: x'  # unchanged
    with pytest.raises(VlmError, match='cannot change'):
        engine.update(model='other')


@pytest.mark.parametrize('height, width, tiles', [
    (30, 30, 1),  # fits one 32 px tile: the processor would upscale it to 64 px, 4 tiles + 1
    (40, 56, 5),  # needs 64 px: the processor's own longest edge, nothing to change
    (20, 90, 3),  # larger than the longest edge: downscaled as the processor does
])
def test_a_tiling_processor_gets_the_size_the_frame_needs(trained_tiny, height, width, tiles):
    from engine_fixtures import scene
    from vlm_ros.engine import Request

    engine = VlmEngine(EngineConfig(model=str(trained_tiny('idefics3')), device='cpu'))
    engine.load()
    request = Request('caption', scene('red', height, width))
    assert engine.preprocess([request])['pixel_values'].shape[1] == tiles
    engine.config.processor_kwargs = {'size': {'longest_edge': 64}}  # the user's choice wins
    assert engine.preprocess([request])['pixel_values'].shape[1] == (5 if tiles == 1 else tiles)


def test_a_processor_that_does_not_tile_is_left_as_it_is(trained_tiny):
    from engine_fixtures import scene
    from vlm_ros.engine import Request
    from vlm_ros.engine.tiling import fitted_size_kwargs

    engine = VlmEngine(EngineConfig(model=str(trained_tiny('llava')), device='cpu'))
    engine.load()
    image = resize_max_side(scene('red', 20, 20), 0)
    assert fitted_size_kwargs(engine.loaded.processor, [image], {}) == {}
    assert engine.run([Request('caption', scene('red', 20, 20))])[0].output_tokens > 0
