"""Shared test data: synthetic camera scenes and the answers tiny checkpoints are trained on."""

import json
import os
import pathlib
import shutil

import cv2
import numpy as np
from vlm_ros.engine.prompts import load_templates, render_task
from vlm_ros.models import FAMILIES as _FAMILIES

FAMILIES = tuple(_FAMILIES)
PLAN_JSON = json.dumps({'steps': [
    {'instruction': 'pick up the red block', 'skill': 'pick', 'target': 'red block'},
    {'instruction': 'place it in the bin', 'skill': 'place', 'target': 'bin'}]})
# task -> (request text, target answer)
TARGETS = {
    'caption': ('', 'a red block on a grey table'),
    'vqa': ('what color is the block?', 'blue'),
    'plan': ('put the red block in the bin', PLAN_JSON),
}
_COLOURS = {'red': (220, 30, 30), 'blue': (30, 60, 220), 'green': (30, 200, 60)}
# ~/ground: the phrase, and the red block's box as the tiny LLaVA sees the 64x48 scene (its
# processor keeps the centre 48x48: x 8-56), in thousandths of that view. Mapped back, it is
# the block's own pixels, RED_BLOCK.
GROUND = ('the red block', '[271, 333, 500, 667]')
RED_BLOCK = (21.0, 16.0, 32.0, 32.0)  # x1, y1, x2, y2 in the scene's pixels (scene())
# The same block as Qwen2-VL writes a box: the phrase between its object markers, then the box
# in thousandths of the whole 64x48 scene between its box markers (special tokens of its own).
QWEN2_GROUND = ('<|object_ref_start|>the red block<|object_ref_end|>'
                '<|box_start|>(328,333),(500,667)<|box_end|>')


def scene(colour: str, height: int = 48, width: int = 64) -> np.ndarray:
    """Draw a grey tabletop with one coloured block: distinct, deterministic frames."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[height // 3:2 * height // 3, width // 3:width // 2] = _COLOURS[colour]
    return image


def jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    """Return image as a camera's JPEG stream delivers it (quality 90, 4:2:0 chroma)."""
    ok, encoded = cv2.imencode('.jpg', cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def training_samples() -> list:
    """(image, prompt, target) triples, prompts rendered exactly as the engine renders them.

    The plan is also taught on the JPEG-compressed frame: a compressed camera must get the
    same plan, as a real model would give it.
    """
    templates = load_templates()
    plan_prompt = render_task(templates, 'plan', TARGETS['plan'][0])
    return [
        (scene('red'), render_task(templates, 'caption'), TARGETS['caption'][1]),
        (scene('blue'), render_task(templates, 'vqa', TARGETS['vqa'][0]), TARGETS['vqa'][1]),
        (scene('red'), plan_prompt, TARGETS['plan'][1]),
        (jpeg_round_trip(scene('red')), plan_prompt, TARGETS['plan'][1]),
        (scene('red'), render_task(templates, 'ground', GROUND[0]), GROUND[1]),
    ]


# Closed-loop plans (execute_plans): a 3-step plan, its re-plans, and the yes/no step checks.
def _plan(*steps) -> str:
    return json.dumps({'steps': [{'instruction': i, 'skill': k, 'target': t}
                                 for i, k, t in steps]})


PICK = ('pick up the red block', 'pick', 'red block')
PLACE = ('place it in the bin', 'place', 'bin')
CLOSE = ('close the lid', 'close', 'lid')
LOOP_INSTRUCTION = 'put the red block in the bin and close the lid'
LOOP_PLAN = _plan(PICK, PLACE, CLOSE)
# After step 2 failed: the rest of the plan, from the step that failed.
LOOP_REPLAN = _plan(PLACE, CLOSE)
OTHER_VERIFY = 'Is {step} over? Say yes or no.'  # a prompt_verify of the test's


def closed_loop_samples() -> list:
    """(image, prompt, target) triples for the closed loop, on top of training_samples().

    The re-plan after a failed 'place it in the bin' (step 1 done) continues from it; the
    re-plan after a silent first step plans everything again; a step check answers yes on the
    red scene and no on the blue one, and yes on the blue one under OTHER_VERIFY (so a changed
    prompt_verify shows in the answer).
    """
    templates = load_templates()
    replan = [({'done': PICK[0], 'failed': PLACE[0]}, LOOP_REPLAN),
              ({'done': 'none', 'failed': PICK[0]}, LOOP_PLAN)]
    return [(scene('red'), render_task(templates, 'plan', LOOP_INSTRUCTION), LOOP_PLAN),
            *[(scene('red'), render_task(templates, 'replan', LOOP_INSTRUCTION, context), target)
              for context, target in replan],
            *[(scene('red'), render_task(templates, 'verify', step[0]), 'yes')
              for step in (PICK, PLACE, CLOSE)],
            (scene('blue'), render_task(templates, 'verify', PICK[0]), 'no'),
            (scene('blue'), render_task(load_templates({'verify': OTHER_VERIFY}), 'verify',
                                        PICK[0]), 'yes')]


# The README's default model id: its checkpoint is an Idefics3 (Idefics3Processor), the family
# the tiny idefics3 checkpoint is; the tests put one under this id into an offline hub cache.
DEFAULT_MODEL = 'HuggingFaceTB/SmolVLM-256M-Instruct'
HUB_REVISION = '0123456789abcdef0123456789abcdef01234567'


def add_to_hub_cache(hf_home: pathlib.Path, repo_id: str, model_dir) -> None:
    """Lay model_dir out as repo_id in the Hugging Face cache under hf_home.

    The layout huggingface_hub downloads into (hub/models--ORG--NAME/refs/main naming a
    snapshot folder), so with HF_HUB_OFFLINE=1 the id loads through the real cache lookup.
    """
    repo = hf_home / 'hub' / ('models--' + repo_id.replace('/', '--'))
    shutil.copytree(model_dir, repo / 'snapshots' / HUB_REVISION)
    (repo / 'refs').mkdir(parents=True)
    (repo / 'refs' / 'main').write_text(HUB_REVISION)


def offline_hub_env(hf_home: pathlib.Path) -> dict:
    """Return the environment of a process that sees only hf_home's cache, never the network."""
    return {**os.environ, 'HF_HOME': str(hf_home), 'HF_HUB_OFFLINE': '1'}


def never_ending(model_dir: pathlib.Path) -> pathlib.Path:
    """Zero the output-layer rows of the end-of-sequence tokens of a checkpoint, in place.

    Their logits become 0 whatever the input, and greedy decoding picks the largest logit,
    which among hundreds of random ones is above 0: the model then never ends a generation.
    """
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    config = json.loads((model_dir / 'generation_config.json').read_text())
    eos = config.get('eos_token_id')
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    eos.add(AutoTokenizer.from_pretrained(model_dir).eos_token_id)
    weights_file = model_dir / 'model.safetensors'
    weights = load_file(weights_file)
    # Florence-2's BART ties its output layer to the shared embeddings, saved once as those.
    heads = [name for name in weights if name.endswith('lm_head.weight')] or \
        [name for name in weights if name.endswith('language_model.shared.weight')]
    assert len(heads) == 1, f'expected one output layer in {sorted(weights)}'
    for token in eos - {None}:
        weights[heads[0]][token] = 0.0
    save_file(weights, weights_file, metadata={'format': 'pt'})
    return model_dir


def with_positions(model_dir: pathlib.Path, positions: int) -> pathlib.Path:
    """Set the positions a checkpoint's text side reads (its config), in place.

    An answer stops where the model's positions end: a never-ending tiny model built with 1024
    ends near 900 new tokens, in about a second, which is sooner than a test that signals or
    deactivates a node in the middle of a generation may come. A rotary model (LLaVA's Mistral
    decoder) reads any number of positions, so raising the count only moves that end.
    """
    config_file = model_dir / 'config.json'
    config = json.loads(config_file.read_text())
    config.get('text_config', config)['max_position_embeddings'] = positions
    config_file.write_text(json.dumps(config, indent=2))
    return model_dir


OWN_CODE = """from transformers import LlavaConfig, LlavaForConditionalGeneration


class OwnLlavaConfig(LlavaConfig):
    model_type = 'vlm_ros_own_llava'


class OwnLlava(LlavaForConditionalGeneration):
    config_class = OwnLlavaConfig
"""


def with_own_code(source: pathlib.Path, folder: pathlib.Path) -> pathlib.Path:
    """Copy a LLaVA checkpoint into folder as a repository with Python code of its own.

    Like the hub's models whose config.json names their own classes (auto_map) under a
    model_type transformers does not know: they load only with trust_remote_code.
    """
    from safetensors.torch import save_file
    from transformers import LlavaForConditionalGeneration

    out = shutil.copytree(source, folder / 'own_llava')
    # The weights under the names the classes of this transformers have: it renames a
    # checkpoint's older names only for the model types it knows.
    model = LlavaForConditionalGeneration.from_pretrained(source)
    save_file({name: weight.clone() for name, weight in model.state_dict().items()},
              out / 'model.safetensors', metadata={'format': 'pt'})
    (out / 'own_llava.py').write_text(OWN_CODE)
    config = json.loads((out / 'config.json').read_text())
    config.update(model_type='vlm_ros_own_llava', auto_map={
        'AutoConfig': 'own_llava.OwnLlavaConfig',
        'AutoModelForImageTextToText': 'own_llava.OwnLlava'})
    (out / 'config.json').write_text(json.dumps(config))
    return out
