"""Random-weight checkpoints with the sizes of real models, for speed measurements offline.

Latency depends on shapes, not on weight values, so a model built from a published model's
configuration (layers, widths, heads, image resolution, visual tokens per image) times like
the real one on a GPU, with nothing downloaded. The builders are the tiny families' own
(tested), given real sizes. Only the tokenizer is the tiny one; the embedding and output
matrices keep the real vocabulary size. Weights are saved in bfloat16 (half the bytes to write
and read back); the loader casts them to whatever dtype is asked for.
"""

import pathlib

import torch

from .families import build_florence2, build_idefics3, build_qwen2_vl, build_tiny

# The parts of each hub checkpoint's config.json that set the cost.
SIZES = {
    'smolvlm-256m': (build_idefics3, {
        'text': {'hidden_size': 576, 'intermediate_size': 1536, 'num_hidden_layers': 30,
                 'num_attention_heads': 9, 'num_key_value_heads': 3, 'rope_theta': 100000.0,
                 'max_position_embeddings': 8192},
        'vocab': {'vocab_size': 49280},
        'vision': {'hidden_size': 768, 'intermediate_size': 3072, 'num_hidden_layers': 12,
                   'num_attention_heads': 12, 'image_size': 512, 'patch_size': 16},
        'scale_factor': 4, 'longest_edge': 2048}),
    'smolvlm-2b': (build_idefics3, {
        'text': {'hidden_size': 2048, 'intermediate_size': 8192, 'num_hidden_layers': 24,
                 'num_attention_heads': 32, 'num_key_value_heads': 32, 'rope_theta': 273768.0,
                 'max_position_embeddings': 16384},
        'vocab': {'vocab_size': 49155},
        'vision': {'hidden_size': 1152, 'intermediate_size': 4304, 'num_hidden_layers': 27,
                   'num_attention_heads': 16, 'image_size': 384, 'patch_size': 14},
        'scale_factor': 3, 'longest_edge': 1536}),
    # Qwen2-VL-2B-Instruct: Qwen2-1.5B's decoder (tied embeddings), a 32-layer 1280-wide ViT,
    # 3136 to 12845056 pixels a frame (a 640x480 frame: 476x644 px, 391 image tokens).
    'qwen2-vl-2b': (build_qwen2_vl, {
        'text': {'hidden_size': 1536, 'intermediate_size': 8960, 'num_hidden_layers': 28,
                 'num_attention_heads': 12, 'num_key_value_heads': 2, 'rope_theta': 1000000.0,
                 'max_position_embeddings': 32768,
                 'rope_scaling': {'type': 'mrope', 'mrope_section': [16, 24, 24]}},
        'vocab': {'vocab_size': 151936},
        'vision': {'depth': 32, 'embed_dim': 1280, 'num_heads': 16, 'mlp_ratio': 4,
                   'patch_size': 14, 'spatial_merge_size': 2, 'temporal_patch_size': 2},
        'min_pixels': 3136, 'max_pixels': 12845056, 'tie_word_embeddings': True}),
    # Florence-2-base: DaViT with Florence2VisionConfig's defaults, BART 6+6 layers, 768 px.
    'florence-2-base': (build_florence2, {
        'vision': {'projection_dim': 768},
        'text': {'d_model': 768, 'encoder_layers': 6, 'decoder_layers': 6,
                 'encoder_attention_heads': 12, 'decoder_attention_heads': 12,
                 'encoder_ffn_dim': 3072, 'decoder_ffn_dim': 3072,
                 'max_position_embeddings': 1024},
        'vocab': {'vocab_size': 51289},
        'image_px': 768, 'image_seq_length': 577}),
}


def build_random(name: str, out_dir, seed: int = 0) -> pathlib.Path:
    """Build a random-weight model: a SIZES name, or 'tiny:FAMILY' for a test one."""
    out_dir = pathlib.Path(out_dir) / name.replace(':', '_')
    if name.startswith('tiny:'):
        return build_tiny(name.split(':', 1)[1], out_dir, seed)
    if name not in SIZES:
        raise ValueError(f'unknown model size {name!r}; choose from {sorted(SIZES)} '
                         'or tiny:FAMILY')
    torch.manual_seed(seed)
    builder, sizes = SIZES[name]
    return builder(out_dir, sizes, dtype=torch.bfloat16)
