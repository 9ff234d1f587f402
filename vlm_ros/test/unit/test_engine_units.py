"""Engine stages alone: loading errors, images (resize, JPEG), prompts, backends, no ROS."""

import io
import uuid

import numpy as np
import pytest
import torch
from PIL import Image
from vlm_ros.engine import EngineConfig, Request, VlmError, make_engine
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


def test_a_hub_id_not_cached_under_local_files_only_is_not_found_saying_so():
    # Ignored, the loader would say HF_HUB_OFFLINE, or try the hub (no network here), instead.
    model = f'vlm-ros-test/{uuid.uuid4().hex}'
    config = EngineConfig(model=model, device='cpu', local_files_only=True)
    with pytest.raises(VlmError) as info:
        load(config)
    assert info.value.kind == 'not_found'
    assert model in str(info.value) and 'local_files_only is set' in str(info.value)


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


@pytest.mark.parametrize('backend', ['transformers', 'openai'])
def test_values_no_request_could_be_answered_under_are_refused_and_change_nothing(backend):
    with pytest.raises(VlmError, match="skills must be a list of names; got 'pick'") as info:
        make_engine(EngineConfig(model='m', backend=backend, skills='pick'))
    assert info.value.kind == 'bad_input'
    engine = make_engine(EngineConfig(model='m', backend=backend, skills=('pick',)))
    for fields, reason in (({'max_new_tokens': -5}, 'max_new_tokens must be a whole number >= 1'),
                           ({'max_new_tokens': '8'}, "got '8'"),
                           ({'max_image_side': -1}, 'max_image_side must be a whole number >= 0'),
                           ({'skills': 'place'}, "skills must be a list of names; got 'place'")):
        with pytest.raises(VlmError, match=reason) as info:
            engine.update(**fields)
        assert info.value.kind == 'bad_input'
    assert (engine.config.max_new_tokens, engine.config.max_image_side, engine.config.skills) \
        == (64, 640, ('pick',))
    engine.update(skills=['pick', 'place'])
    assert engine.config.skills == ('pick', 'place')


@pytest.mark.parametrize('backend', ['transformers', 'openai'])
def test_a_batch_run_cannot_take_is_the_callers_error_before_anything_runs(backend):
    """Refused whether or not a model is loaded: no AttributeError from deep inside."""
    engine = make_engine(EngineConfig(model='m', backend=backend))
    request = Request('vqa', np.zeros((8, 8, 3), np.uint8), 'what is it?')
    for args, kwargs, reason in (
            ((request,), {}, 'requests must be a list of vlm_ros.engine.Request; got a Request'),
            (([request, None],), {}, 'it holds NoneType'),
            (([request],), {'cancel': True}, 'cancel must be a threading.Event; got True'),
            (([request, request],), {'on_text': print}, 'on_text streams a single request'),
            (([Request('vqa', request.image, 'x', -1)],), {},
             'Request.max_new_tokens must be a whole number >= 0; got -1')):
        with pytest.raises(VlmError, match=reason) as info:
            engine.run(*args, **kwargs)
        assert info.value.kind == 'bad_input'


def test_a_model_path_or_device_that_is_no_string_is_refused_saying_what_to_pass(tmp_path):
    with pytest.raises(VlmError, match=r'model must be a string; got PosixPath .* \(pass '
                       r'str\(path\)\)') as info:
        make_engine(EngineConfig(model=tmp_path / 'model'))
    assert info.value.kind == 'bad_input'
    with pytest.raises(VlmError, match='device must be a string; got NoneType None'):
        make_engine(EngineConfig(model='m', device=None))
