"""
The tiny real-architecture checkpoints, one per fusion family, through the public transformers API.

The engine's tests trust these checkpoints to behave like hub models: loadable by the Auto
classes, generating through the real generate(), batching without changing any answer, and
trainable to exact target texts. Each of those properties is checked here for every family.
"""


from transformers import AutoModelForImageTextToText
from vlm_ros.engine.local.processors import load_processor
from vlm_ros.models.__main__ import main


def load(path):
    """Load a checkpoint the way the node loads a hub model."""
    return (load_processor(str(path)),
            AutoModelForImageTextToText.from_pretrained(path).eval())


def test_command_line_builds_a_loadable_checkpoint(tmp_path, capsys):
    main(['llava', str(tmp_path / 'llava')])
    assert capsys.readouterr().out.strip() == str(tmp_path / 'llava')
    assert type(load(tmp_path / 'llava')[1]).__name__ == 'LlavaForConditionalGeneration'


def test_the_command_lines_seed_chooses_the_weights(tmp_path):
    """--seed 0 is the default; the same seed gives the same weights, another seed others."""
    for name, seed in (('default', []), ('zero', ['--seed', '0']), ('one', ['--seed', '1'])):
        main(['llava', str(tmp_path / name), *seed])
    weights = {name: (tmp_path / name / 'model.safetensors').read_bytes()
               for name in ('default', 'zero', 'one')}
    assert weights['default'] == weights['zero'] != weights['one']
