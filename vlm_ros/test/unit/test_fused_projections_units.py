"""Fused q/k/v and gate/up projections (fused_projections.py): the separate products, in less.

The graphs decode mode fuses every decoder layer's projections of one input into one product.
Its tokens must stay eager's: here the fused model's logits equal the unfused model's bit for
bit (float32 on the CPU), the weights are not copied, and a projection called out of turn or
with another input still gives its own product.
"""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from vlm_ros.engine.local.fused_projections import FusedPart, fuse_projections

SIZES = {'vocab_size': 97, 'hidden_size': 32, 'intermediate_size': 48, 'num_hidden_layers': 2,
         'num_attention_heads': 4, 'num_key_value_heads': 2, 'max_position_embeddings': 128}


def random_model(config_class, model_class, **extra):
    """Return a random-weight decoder of real architecture, in eval mode."""
    torch.manual_seed(3)
    return model_class(config_class(**SIZES, **extra)).eval()


# Llama's projections have no bias (SmolVLM, LLaVA), Qwen2's q, k, v have one.
ARCHITECTURES = {'llama': (LlamaConfig, LlamaForCausalLM),
                 'qwen2': (Qwen2Config, Qwen2ForCausalLM)}


@pytest.fixture(params=sorted(ARCHITECTURES))
def pair(request):
    """Yield (unfused, fused) copies of one random model."""
    model = random_model(*ARCHITECTURES[request.param])
    fused = copy.deepcopy(model)
    assert fuse_projections(fused.get_decoder()) == 2 * SIZES['num_hidden_layers']
    return model, fused


def test_fused_model_gives_the_unfused_logits_and_greedy_tokens_bit_for_bit(pair):
    model, fused = pair
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, SIZES['vocab_size'], (3, 11), generator=generator)
    with torch.no_grad():
        assert torch.equal(fused(ids).logits, model(ids).logits)
        settings = {'max_new_tokens': 20, 'min_new_tokens': 20, 'do_sample': False,
                    'output_scores': True, 'return_dict_in_generate': True}
        expected, answered = model.generate(ids, **settings), fused.generate(ids, **settings)
    assert torch.equal(answered.sequences, expected.sequences)
    assert all(torch.equal(a, b) for a, b in zip(answered.scores, expected.scores, strict=True))


def test_each_projection_is_a_view_of_one_stacked_weight_so_no_weight_is_copied(pair):
    model, fused = pair
    attention = fused.get_decoder().layers[0].self_attn
    parts = [attention.q_proj, attention.k_proj, attention.v_proj]
    assert all(isinstance(part, FusedPart) for part in parts)
    assert len({part.weight.untyped_storage().data_ptr() for part in parts}) == 1
    assert len({part.bias is None for part in parts}) == 1
    stored = {parameter.untyped_storage().data_ptr(): parameter.untyped_storage().nbytes()
              for parameter in fused.parameters()}
    assert sum(stored.values()) == sum(p.numel() * p.element_size() for p in model.parameters())
    original = model.get_decoder().layers[0].self_attn
    assert torch.equal(attention.k_proj.weight, original.k_proj.weight)


def test_a_projection_called_alone_out_of_turn_or_with_another_input_gives_its_own_product(pair):
    model, fused = pair
    original = model.get_decoder().layers[1].mlp
    mlp = fused.get_decoder().layers[1].mlp
    first, second = (torch.randn(2, 5, SIZES['hidden_size']) for _ in range(2))
    with torch.no_grad():
        assert torch.equal(mlp.up_proj(first), original.up_proj(first))  # the second part first
        assert torch.equal(mlp.up_proj(second), original.up_proj(second))  # again, another input
        assert torch.equal(mlp.gate_proj(first), original.gate_proj(first))
        assert torch.equal(mlp.gate_proj(second), original.gate_proj(second))
        assert torch.equal(mlp.up_proj(second), original.up_proj(second))
        assert torch.equal(mlp(first), original(first))


def test_no_activation_is_kept_once_every_part_has_taken_its_columns(pair):
    _, fused = pair
    attention = fused.get_decoder().layers[0].self_attn
    hidden = torch.randn(1, 4, SIZES['hidden_size'])
    with torch.no_grad():
        attention.q_proj(hidden)
        attention.k_proj(hidden)
        assert attention.v_proj._product._input is hidden  # v's columns not taken yet
        attention.v_proj(hidden)
    assert attention.v_proj._product._input is None and attention.v_proj._product._parts is None


def test_a_fused_decoder_is_not_fused_again_and_other_modules_are_left_alone(pair):
    _, fused = pair
    assert fuse_projections(fused.get_decoder()) == 0
    mixed = random_model(LlamaConfig, LlamaForCausalLM)
    attention = mixed.get_decoder().layers[0].self_attn
    attention.k_proj = torch.nn.Linear(SIZES['hidden_size'], attention.k_proj.out_features)
    assert fuse_projections(mixed.get_decoder()) == 2 * SIZES['num_hidden_layers'] - 1
    assert type(attention.q_proj) is torch.nn.Linear  # biased k beside unbiased q and v
    assert fuse_projections(torch.nn.Linear(2, 2)) == 0  # nothing with layers


def test_the_stacked_product_is_the_separate_products_for_a_batch_of_single_tokens(pair):
    """The decoding step's shape: one token per row."""
    model, fused = pair
    original = model.get_decoder().layers[0].self_attn
    attention = fused.get_decoder().layers[0].self_attn
    hidden = torch.randn(8, 1, SIZES['hidden_size'])
    with torch.no_grad():
        for name in ('q_proj', 'k_proj', 'v_proj'):
            reference = getattr(original, name)
            expected = torch.nn.functional.linear(hidden, reference.weight, reference.bias)
            assert torch.equal(getattr(attention, name)(hidden), expected)
