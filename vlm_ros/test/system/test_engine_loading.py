"""Engine stages alone: loading errors, images (resize, JPEG), prompts, backends, no ROS."""

import json
import subprocess
import sys

import pytest
import torch
from engine_fixtures import TARGETS, scene
from vlm_ros.engine import EngineConfig, Request, VlmError
from vlm_ros.engine.local import VlmEngine
from vlm_ros.engine.local.loader import load
from vlm_ros.engine.preprocess import resize_max_side
from vlm_ros.models.families import QWEN2_5_VL_TINY, build_qwen2_vl

# Needs no ROS: scripts/test runs it on the first leg only.
pytestmark = pytest.mark.distro_independent


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


@pytest.mark.parametrize(('made', 'said'), [(False, 'does not exist'),
                                            (True, 'is a file, not a checkpoint folder')])
def test_a_model_path_that_is_no_folder_says_what_it_is(tmp_path, made, said):
    path = tmp_path / 'model.safetensors'  # a user naming the weights file instead of its folder
    if made:
        path.write_bytes(b'weights')
    with pytest.raises(VlmError) as info:
        load(EngineConfig(model=str(path), device='cpu', local_files_only=True))
    assert info.value.kind == 'not_found'
    assert str(info.value).startswith(f"model directory '{path}' {said} ("), str(info.value)


def test_engine_imports_without_rclpy():
    code = ('import sys; sys.modules["rclpy"] = None\n'
            'import vlm_ros.engine, vlm_ros.models\n'
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


def test_cpu_threads_are_what_a_request_computes_with_and_0_gives_them_back(trained_tiny):
    import threading

    import torch
    from engine_fixtures import scene
    from vlm_ros.engine import Request
    from vlm_ros.engine.local.loader import STARTING_THREADS

    def threads_while_generating(cpu_threads: int) -> set:
        """Load with cpu_threads, caption in another thread (as the node's worker does)."""
        engine = VlmEngine(EngineConfig(model=str(trained_tiny('llava')), device='cpu',
                                        cpu_threads=cpu_threads, max_new_tokens=8))
        engine.load()
        seen = set()
        worker = threading.Thread(target=engine.run, args=([Request('caption', scene('red'))],),
                                  kwargs={'on_text': lambda piece: seen.add(
                                      torch.get_num_threads())})
        worker.start()
        worker.join()
        assert engine.status()['cpu_threads'] == next(iter(seen)), seen
        engine.unload()
        return seen

    assert threads_while_generating(STARTING_THREADS + 1) == {STARTING_THREADS + 1}
    assert threads_while_generating(0) == {STARTING_THREADS}
    with pytest.raises(VlmError, match='cpu_threads must be 0'):
        load(EngineConfig(model=str(trained_tiny('llava')), device='cpu', cpu_threads=-1))


@pytest.mark.parametrize('dtype, attention', [('bfloat16', 'eager'), ('float32', 'sdpa')])
def test_dtype_and_attn_implementation_are_what_the_model_is_loaded_with(trained_tiny, dtype,
                                                                         attention):
    import torch
    from engine_fixtures import scene
    from vlm_ros.engine import Request

    # Each case differs from the other in both (vlm_node passes its parameters of these names).
    config = EngineConfig(model=str(trained_tiny('llava')), device='cpu', dtype=dtype,
                          attn_implementation=attention, max_new_tokens=4)
    engine = VlmEngine(config)
    engine.load()
    try:
        model = engine.loaded.model
        assert {parameter.dtype for parameter in model.parameters()} == {getattr(torch, dtype)}
        configs = [model.config, model.config.text_config, model.config.vision_config]
        assert [c._attn_implementation for c in configs] == [attention] * 3
        assert engine.run([Request('caption', scene('red'))])[0].output_tokens > 0
    finally:
        engine.unload()


def test_a_model_with_its_own_code_loads_only_where_it_is_trusted(own_code_llava):
    untrusted = VlmEngine(EngineConfig(model=str(own_code_llava), device='cpu'))
    with pytest.raises(VlmError) as refused:
        untrusted.load()
    assert refused.value.kind == 'unsupported' and refused.value.exit_code == 2
    assert f'{own_code_llava} holds Python code of its own (auto_map in its configuration), ' \
        "which runs only where it is trusted: vlm_node's trust_remote_code:=true, the tools' " \
        '--trust-remote-code' in str(refused.value), refused.value
    trusted = VlmEngine(EngineConfig(model=str(own_code_llava), device='cpu',
                                     trust_remote_code=True))
    trusted.load()
    try:
        assert type(trusted.loaded.model).__name__ == 'OwnLlava'  # the repository's class
        answer = trusted.run([Request('vqa', scene('blue'), TARGETS['vqa'][0])])[0]
        assert answer.text == TARGETS['vqa'][1]  # with the trained weights
    finally:
        trusted.unload()


def test_a_qwen2_5_vl_checkpoint_answers_in_a_batch_as_it_does_alone(tmp_path):
    """Qwen2.5-VL loads like Qwen2-VL (a family of the tests), windowed attention in its ViT.

    Random weights: what is checked is that it loads, without the video processor a machine
    without torchvision cannot build, that frames of other sizes batch without changing any
    answer, and that the graphs decode mode (auto's on CUDA) gives eager's tokens and
    log-probabilities.
    """
    with torch.random.fork_rng():
        torch.manual_seed(25)
        path = build_qwen2_vl(tmp_path / 'qwen2_5_vl', QWEN2_5_VL_TINY)
    requests = [Request('caption', scene('red')), Request('vqa', scene('blue', 30, 90), 'go?'),
                Request('plan', scene('green', 100, 60), TARGETS['plan'][0])]
    answers = {}
    for mode in ('eager', 'graphs'):
        engine = VlmEngine(EngineConfig(model=str(path), device='cpu', max_new_tokens=8,
                                        decode_mode=mode))
        engine.load()
        try:
            assert type(engine.loaded.model).__name__ == 'Qwen2_5_VLForConditionalGeneration'
            assert type(engine.loaded.processor).__name__ == 'Qwen2_5_VLProcessor'
            assert engine.decoding.mode == mode
            answers[mode] = engine.run(requests)
            alone = [engine.run([request])[0].text for request in requests]
            assert [r.text for r in answers[mode]] == alone
        finally:
            engine.unload()
    eager, graphs = answers['eager'], answers['graphs']
    assert all(r.output_tokens > 3 for r in eager)
    assert [r.text for r in graphs] == [r.text for r in eager]
    for got, expected in zip(graphs, eager, strict=True):
        assert got.token_logprobs == pytest.approx(expected.token_logprobs, abs=1e-5)
