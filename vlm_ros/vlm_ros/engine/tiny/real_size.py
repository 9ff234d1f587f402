"""Random-weight checkpoints with the sizes of real models, for speed measurements offline.

Latency depends on shapes, not on weight values, so a model built from a published model's
configuration (layers, widths, heads, image resolution, visual tokens per image) times like
the real one on a GPU, with nothing downloaded. Only the vocabulary is small (the tokenizer is
the tiny one), which changes the output projection's size by a few percent at most.
Weights are saved in bfloat16 (half the bytes to write and read back); the loader casts them
to whatever dtype is asked for. Qwen2-VL is left out: its processor needs torchvision, which
cannot be installed beside this torch; SmolVLM-Instruct (2.2 B, Idefics3) is the 2 B-class
decoder-only model instead.
"""

import pathlib

import torch
from transformers import (
    BartConfig,
    CLIPImageProcessorPil,
    Florence2Config,
    Florence2ForConditionalGeneration,
    Florence2Processor,
    Florence2VisionConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessorPil,
    Idefics3Processor,
    LlamaConfig,
)

from .families import IDEFICS_TEMPLATE, _save, _token_ids, build_tiny
from .tokenizer import build_tokenizer

# Published configurations (config.json of each hub checkpoint), the parts that set the cost.
SMOLVLM = {
    'smolvlm-256m': {
        'text': {'hidden_size': 576, 'intermediate_size': 1536, 'num_hidden_layers': 30,
                 'num_attention_heads': 9, 'num_key_value_heads': 3, 'vocab_size': 49280,
                 'rope_theta': 100000.0, 'max_position_embeddings': 8192},
        'vision': {'hidden_size': 768, 'intermediate_size': 3072, 'num_hidden_layers': 12,
                   'num_attention_heads': 12, 'image_size': 512, 'patch_size': 16},
        'scale_factor': 4, 'longest_edge': 2048, 'tile': 512},
    'smolvlm-2b': {
        'text': {'hidden_size': 2048, 'intermediate_size': 8192, 'num_hidden_layers': 24,
                 'num_attention_heads': 32, 'num_key_value_heads': 32, 'vocab_size': 49155,
                 'rope_theta': 273768.0, 'max_position_embeddings': 16384},
        'vision': {'hidden_size': 1152, 'intermediate_size': 4304, 'num_hidden_layers': 27,
                   'num_attention_heads': 16, 'image_size': 384, 'patch_size': 14},
        'scale_factor': 3, 'longest_edge': 1536, 'tile': 384},
}


def build_smolvlm(name: str, out_dir) -> pathlib.Path:
    """SmolVLM (Idefics3: SigLIP tiles, pixel shuffle, Llama decoder) at its real size."""
    spec = SMOLVLM[name]
    grid = [f'<row_{row}_col_{col}>' for row in range(1, 7) for col in range(1, 7)]
    tokenizer = build_tokenizer(
        bos_token='<|begin_of_text|>', eos_token='<end_of_utterance>',
        pad_token='<|finetune_right_pad_id|>',
        special_tokens=['<fake_token_around_image>', '<image>', '<global-img>', *grid])
    ids = {**_token_ids(tokenizer), 'vocab_size': spec['text']['vocab_size']}
    config = Idefics3Config(vision_config=spec['vision'],
                            text_config=LlamaConfig(**{**spec['text'], **ids}),
                            image_token_id=tokenizer.convert_tokens_to_ids('<image>'),
                            scale_factor=spec['scale_factor'])
    patches = spec['vision']['image_size'] // spec['vision']['patch_size']
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={'longest_edge': spec['longest_edge']},
            max_image_size={'longest_edge': spec['tile']}),
        tokenizer=tokenizer, image_seq_len=patches ** 2 // spec['scale_factor'] ** 2,
        chat_template='<|begin_of_text|>' + IDEFICS_TEMPLATE)
    return _save(Idefics3ForConditionalGeneration(config).to(torch.bfloat16), processor,
                 out_dir, ['<end_of_utterance>'])


def build_florence2_base(out_dir) -> pathlib.Path:
    """Florence-2-base (DaViT + BART 6+6 layers, d_model 768, 768 px, 577 visual tokens)."""
    tokenizer = build_tokenizer(bos_token='<s>', eos_token='</s>', pad_token='<pad>',
                                named_tokens={'image_token': '<image>'}, padding_side='right')
    vision = Florence2VisionConfig(projection_dim=768)
    text = BartConfig(d_model=768, encoder_layers=6, decoder_layers=6,
                      encoder_attention_heads=12, decoder_attention_heads=12,
                      encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1024,
                      decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None,
                      **{**_token_ids(tokenizer), 'vocab_size': 51289})
    config = Florence2Config(vision_config=vision, text_config=text,
                             image_token_id=tokenizer.image_token_id)
    image_processor = CLIPImageProcessorPil(size={'height': 768, 'width': 768},
                                            crop_size={'height': 768, 'width': 768},
                                            do_center_crop=False)
    image_processor.image_seq_length = 577
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(Florence2ForConditionalGeneration(config).to(torch.bfloat16), processor,
                 out_dir, ['</s>'], decoder_start_token_id=tokenizer.eos_token_id)


REAL_SIZES = ('smolvlm-256m', 'smolvlm-2b', 'florence-2-base')


def build_random(name: str, out_dir, seed: int = 0) -> pathlib.Path:
    """Build a random-weight model: a REAL_SIZES name, or 'tiny:FAMILY' for a test one."""
    out_dir = pathlib.Path(out_dir) / name.replace(':', '_')
    torch.manual_seed(seed)
    if name.startswith('tiny:'):
        return build_tiny(name.split(':', 1)[1], out_dir, seed)
    if name in SMOLVLM:
        return build_smolvlm(name, out_dir)
    if name == 'florence-2-base':
        return build_florence2_base(out_dir)
    raise ValueError(f'unknown model size {name!r}; choose from {REAL_SIZES} or tiny:FAMILY')
