"""
Builders of tiny random-weight checkpoints of real transformers VLM architectures.

Tests of the inference engine must exercise the real model classes, processors and generate()
of every fusion family the node supports, yet no checkpoint can be downloaded. Each builder
instantiates the family's real configuration at toy size (hidden 32-64, 1-2 layers, 28-64 px
images), its real processor with the slow (PIL) image processor, and a small byte-level BPE
tokenizer, then writes everything with save_pretrained so that AutoProcessor and
AutoModelForImageTextToText load it back like a hub checkpoint.

Qwen2-VL's processor is saved less its video processor, which transformers builds only with
torchvision, as the engine loads it (engine.local.processors).
"""

import pathlib
from collections.abc import Callable

import torch
from transformers import (
    BartConfig,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Florence2VisionConfig,
    GenerationConfig,
    Idefics2Config,
    Idefics2ForConditionalGeneration,
    Idefics2ImageProcessorPil,
    Idefics2Processor,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    MistralConfig,
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaImageProcessorPil,
    MllamaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
)

from ..engine.local.processors import images_only
from .tokenizer import build_tokenizer

# Decoder sizes shared by the families: enough capacity to memorise a few JSON plans quickly.
TEXT_SIZES = {
    'hidden_size': 64,
    'intermediate_size': 128,
    'num_hidden_layers': 2,
    'num_attention_heads': 4,
    'num_key_value_heads': 2,
    'max_position_embeddings': 1024,
}

# Chat templates in the style of the real checkpoints' (llava-1.5-hf, idefics2-8b,
# Idefics3-8B-Llama3, Llama-3.2-Vision-Instruct), reduced to what the node sends.
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    '{% endfor %}'
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
IDEFICS_TEMPLATE = (
    '{% for message in messages %}'
    "{{ message['role'].capitalize() }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}"
    '{% endfor %}<end_of_utterance>\n{% endfor %}'
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
MLLAMA_TEMPLATE = (
    '{{ bos_token }}{% for message in messages %}'
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|image|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    '{% endfor %}<|eot_id|>{% endfor %}'
    '{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}'
)
QWEN2_VL_TEMPLATE = (
    '{% for message in messages %}'
    "{% if loop.first and message['role'] != 'system' %}"
    '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}'
    "<|im_start|>{{ message['role'] }}\n"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    '{% endfor %}<|im_end|>\n{% endfor %}'
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _token_ids(tokenizer) -> dict:
    """Return the special-token ids a text config needs so the model agrees with its tokenizer."""
    return {
        'vocab_size': len(tokenizer),
        'bos_token_id': tokenizer.bos_token_id,
        'eos_token_id': tokenizer.eos_token_id,
        'pad_token_id': tokenizer.pad_token_id,
    }


def _save(model, processor, out_dir, stop_tokens: list[str], **generation) -> pathlib.Path:
    """
    Write model, processor and a greedy generation config to out_dir.

    stop_tokens lists the tokens that end an answer, first the one training appends to every
    target; generate() stops on any of them, as it does for the real chat checkpoints.
    """
    tokenizer = processor.tokenizer
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(stop_tokens),
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        **generation,
    )
    out = pathlib.Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_llava(out_dir) -> pathlib.Path:
    """Decoder-only with a fixed-resolution CLIP ViT and an MLP projector (LLaVA-1.5)."""
    tokenizer = build_tokenizer(bos_token='<s>', eos_token='</s>', pad_token='<pad>',
                                named_tokens={'image_token': '<image>'}, add_bos=True)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=2, image_size=32, patch_size=8,
                              projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=LlamaConfig(**TEXT_SIZES,
                                                                       **_token_ids(tokenizer)),
                         image_token_id=tokenizer.image_token_id, image_seq_length=16,
                         vision_feature_layer=-1, vision_feature_select_strategy='default')
    image_processor = CLIPImageProcessorPil(size={'shortest_edge': 32},
                                            crop_size={'height': 32, 'width': 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                               patch_size=8, vision_feature_select_strategy='default',
                               num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE)
    return _save(LlavaForConditionalGeneration(config), processor, out_dir, ['</s>'])


IDEFICS3_TINY = {
    'text': TEXT_SIZES,
    'vision': {'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
               'num_attention_heads': 2, 'image_size': 32, 'patch_size': 8},
    'scale_factor': 2, 'longest_edge': 64,
}


def build_idefics3(out_dir, sizes: dict = IDEFICS3_TINY, dtype=torch.float32) -> pathlib.Path:
    """
    Decoder-only with dynamic resolution: the image is split into a grid of tiles.

    sizes holds the text and vision configuration, the pixel-shuffle scale factor and the
    longest edge the processor resizes to (tiles are vision image_size pixels); the defaults
    are tiny, real_size.py passes SmolVLM's.
    """
    grid = [f'<row_{row}_col_{col}>' for row in range(1, 7) for col in range(1, 7)]
    tokenizer = build_tokenizer(
        bos_token='<|begin_of_text|>', eos_token='<end_of_utterance>',
        pad_token='<|finetune_right_pad_id|>',
        special_tokens=['<fake_token_around_image>', '<image>', '<global-img>',
                        '<|end_of_text|>', *grid])
    vision, scale = sizes['vision'], sizes['scale_factor']
    config = Idefics3Config(vision_config=vision,
                            text_config=LlamaConfig(**{**sizes['text'], **_token_ids(tokenizer),
                                                       **sizes.get('vocab', {})}),
                            image_token_id=tokenizer.convert_tokens_to_ids('<image>'),
                            scale_factor=scale)
    image_processor = Idefics3ImageProcessorPil(
        size={'longest_edge': sizes['longest_edge']},
        max_image_size={'longest_edge': vision['image_size']})
    patches = vision['image_size'] // vision['patch_size']
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=patches ** 2 // scale ** 2,
                                  chat_template='<|begin_of_text|>' + IDEFICS_TEMPLATE)
    return _save(Idefics3ForConditionalGeneration(config).to(dtype), processor, out_dir,
                 ['<end_of_utterance>', '<|end_of_text|>'])


def build_idefics2(out_dir) -> pathlib.Path:
    """Decoder-only with a perceiver resampler that pools any image into a few latents."""
    tokenizer = build_tokenizer(bos_token='<s>', eos_token='</s>', pad_token='<pad>',
                                special_tokens=['<fake_token_around_image>', '<image>',
                                                '<end_of_utterance>'], add_bos=True)
    vision = {'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
              'num_attention_heads': 2, 'image_size': 56, 'patch_size': 14}
    perceiver = {'hidden_size': TEXT_SIZES['hidden_size'], 'resampler_n_latents': 4,
                 'resampler_depth': 1, 'resampler_n_heads': 2, 'resampler_head_dim': 16,
                 'num_key_value_heads': 1}
    config = Idefics2Config(vision_config=vision, perceiver_config=perceiver,
                            text_config=MistralConfig(**TEXT_SIZES, **_token_ids(tokenizer)),
                            image_token_id=tokenizer.convert_tokens_to_ids('<image>'))
    image_processor = Idefics2ImageProcessorPil(size={'shortest_edge': 28, 'longest_edge': 56})
    processor = Idefics2Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=4, chat_template=IDEFICS_TEMPLATE)
    return _save(Idefics2ForConditionalGeneration(config), processor, out_dir,
                 ['<end_of_utterance>', '</s>'])


def build_mllama(out_dir) -> pathlib.Path:
    """Cross-attention fusion (Flamingo-style): text layer 1 attends to the image tiles."""
    tokenizer = build_tokenizer(
        bos_token='<|begin_of_text|>', eos_token='<|eot_id|>',
        pad_token='<|finetune_right_pad_id|>', named_tokens={'image_token': '<|image|>'},
        special_tokens=['<|python_tag|>', '<|start_header_id|>', '<|end_header_id|>',
                        '<|end_of_text|>'])
    vision = {'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
              'num_global_layers': 1, 'attention_heads': 2, 'image_size': 28, 'patch_size': 14,
              'max_num_tiles': 2, 'supported_aspect_ratios': [[1, 1], [1, 2], [2, 1]],
              'intermediate_layers_indices': [0], 'vision_output_dim': 64}
    text = {**TEXT_SIZES, **_token_ids(tokenizer), 'cross_attention_layers': [1]}
    config = MllamaConfig(vision_config=vision, text_config=text,
                          image_token_id=tokenizer.image_token_id)
    image_processor = MllamaImageProcessorPil(size={'height': 28, 'width': 28},
                                              max_image_tiles=2)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=MLLAMA_TEMPLATE)
    return _save(MllamaForConditionalGeneration(config), processor, out_dir,
                 ['<|eot_id|>', '<|end_of_text|>'])


QWEN2_VL_TINY = {
    'text': {**TEXT_SIZES, 'rope_scaling': {'type': 'mrope', 'mrope_section': [2, 3, 3]}},
    'vision': {'depth': 2, 'embed_dim': 32, 'num_heads': 2, 'mlp_ratio': 2, 'patch_size': 14,
               'spatial_merge_size': 2, 'temporal_patch_size': 2},
    # Pixel counts: a 64x48 scene becomes 56x56, 4x4 patches, 4 tokens after the 2x2 merge.
    'min_pixels': 28 * 28 * 4, 'max_pixels': 28 * 28 * 16,
}
# Qwen2.5-VL: the same processor and decoder; its ViT attends within windows (of 56 px here)
# but in its full-attention layers, and names its widths as a ViT's config does.
QWEN2_5_VL_TINY = {
    **QWEN2_VL_TINY, 'version': 'qwen2_5_vl',
    'vision': {'depth': 2, 'hidden_size': 32, 'intermediate_size': 64, 'num_heads': 2,
               'patch_size': 14, 'spatial_merge_size': 2, 'temporal_patch_size': 2,
               'window_size': 56, 'fullatt_block_indexes': [1]},
}
# version -> configuration, model and processor classes, and the vision config's key for the
# width its merger hands the decoder.
_QWEN = {
    'qwen2_vl': (Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor,
                 'hidden_size'),
    'qwen2_5_vl': (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor,
                   'out_hidden_size'),
}


def build_qwen2_vl(out_dir, sizes: dict = QWEN2_VL_TINY, dtype=torch.float32) -> pathlib.Path:
    """
    Decoder-only at native resolution: patches of any image size, 3-D rotary positions (M-RoPE).

    The image is resized to a multiple of 28 px within a pixel budget (min_pixels, max_pixels)
    and each 2x2 of its 14 px patches becomes one token; the text's rotary positions are split
    into time, height and width sections. sizes holds the text and vision configuration and the
    pixel budget (tiny by default, real_size.py passes Qwen2-VL-2B's), and its 'version'
    ('qwen2_5_vl': QWEN2_5_VL_TINY) the architecture.
    """
    config_class, model_class, processor_class, width = _QWEN[sizes.get('version', 'qwen2_vl')]
    tokenizer = build_tokenizer(
        bos_token=None, eos_token='<|im_end|>', pad_token='<|endoftext|>',
        special_tokens=['<|im_start|>', '<|vision_start|>', '<|vision_end|>', '<|image_pad|>',
                        '<|video_pad|>', '<|object_ref_start|>', '<|object_ref_end|>',
                        '<|box_start|>', '<|box_end|>'])  # special, as Qwen2-VL's own
    ids = tokenizer.convert_tokens_to_ids
    text = {**sizes['text'], **_token_ids(tokenizer), **sizes.get('vocab', {})}
    config = config_class(text_config=text,
                          vision_config={**sizes['vision'], width: text['hidden_size']},
                          image_token_id=ids('<|image_pad|>'),
                          video_token_id=ids('<|video_pad|>'),
                          vision_start_token_id=ids('<|vision_start|>'),
                          vision_end_token_id=ids('<|vision_end|>'),
                          tie_word_embeddings=sizes.get('tie_word_embeddings', False))
    vision = sizes['vision']
    image_processor = Qwen2VLImageProcessorPil(
        size={'shortest_edge': sizes['min_pixels'], 'longest_edge': sizes['max_pixels']},
        patch_size=vision['patch_size'], merge_size=vision['spatial_merge_size'],
        temporal_patch_size=vision['temporal_patch_size'])
    processor = images_only(processor_class)(image_processor=image_processor,
                                             tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    return _save(model_class(config).to(dtype), processor, out_dir,
                 ['<|im_end|>', '<|endoftext|>'])


FLORENCE2_TINY = {
    'vision': {'depths': (1, 1, 1, 1), 'embed_dim': (8, 16, 32, 64), 'num_heads': (1, 1, 2, 2),
               'num_groups': (1, 1, 2, 2), 'window_size': 2, 'drop_path_rate': 0.0,
               'projection_dim': 64},
    'text': {'d_model': 64, 'encoder_layers': 1, 'decoder_layers': 1,
             'encoder_attention_heads': 4, 'decoder_attention_heads': 4, 'encoder_ffn_dim': 128,
             'decoder_ffn_dim': 128, 'max_position_embeddings': 256},
    # A 64 px image leaves 2x2 DaViT cells after stride 32, plus one pooled (temporal) token.
    'image_px': 64, 'image_seq_length': 5,
}


def build_florence2(out_dir, sizes: dict = FLORENCE2_TINY, dtype=torch.float32) -> pathlib.Path:
    """
    Encoder-decoder: DaViT image tokens and the prompt feed a BART encoder.

    The prompt is plain text (Florence-2 has no chat template) and is right-padded: BART's
    learned positions count from the first token, so left padding would shift them. sizes
    holds the vision and BART configuration and the image resolution (tiny by default).
    """
    tokenizer = build_tokenizer(bos_token='<s>', eos_token='</s>', pad_token='<pad>',
                                named_tokens={'image_token': '<image>'}, padding_side='right')
    vision = Florence2VisionConfig(**sizes['vision'])
    text = BartConfig(**sizes['text'], decoder_start_token_id=tokenizer.eos_token_id,
                      # BART's default (2) is an id of BART's vocabulary, not of this one.
                      forced_eos_token_id=None,
                      **{**_token_ids(tokenizer), **sizes.get('vocab', {})})
    config = Florence2Config(vision_config=vision, text_config=text,
                             image_token_id=tokenizer.image_token_id)
    side = sizes['image_px']
    image_processor = CLIPImageProcessorPil(size={'height': side, 'width': side},
                                            crop_size={'height': side, 'width': side},
                                            do_center_crop=False)
    image_processor.image_seq_length = sizes['image_seq_length']
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(Florence2ForConditionalGeneration(config).to(dtype), processor, out_dir,
                 ['</s>'], decoder_start_token_id=tokenizer.eos_token_id)


# family -> builder(out_dir): each draws its random weights from torch's global generator.
FAMILIES: dict[str, Callable[..., pathlib.Path]] = {
    'llava': build_llava,
    'idefics3': build_idefics3,
    'idefics2': build_idefics2,
    'mllama': build_mllama,
    'florence2': build_florence2,
    'qwen2_vl': build_qwen2_vl,
}


def build_tiny(family: str, out_dir, seed: int = 0) -> pathlib.Path:
    """
    Build the tiny checkpoint of one family into out_dir and return its path.

    The same seed gives the same weights; the caller's random state is left as it was.
    """
    if family not in FAMILIES:
        raise ValueError(f'unknown family {family!r}; choose from {sorted(FAMILIES)}')
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return FAMILIES[family](out_dir)
