"""``transformers:CLASS?config=value`` specs: Hugging Face models built from
their configuration on the meta device, audited with nothing uncounted, their
attention and MLP blocks' MACs against hand closed forms, tied embeddings
stored once. Tiny configurations (hidden 64, 4 heads, 16 tokens)."""
import pytest

import micronet
from micronet.errors import SpecError, UsageError
from micronet.resolve import resolve_model

H, HEADS, HD, FF, V, T = 64, 4, 16, 128, 100, 16  # hidden, heads, head dim, MLP width, vocab, tokens
IDS = ((1, T), "int64")


def _audit(spec, inputs):
    result = micronet.audit(spec, inputs=inputs)
    assert result.uncounted == (), [(r.name, r.reason) for r in result.uncounted]
    return result


def _macs(result, prefix):
    """MACs of the module ``prefix`` and everything under it."""
    return sum(cost.macs for record, cost in result.layers
               if record.name == prefix or record.name.startswith(prefix + "."))


def _attention(tokens_q, tokens_k, kv_heads=HEADS):
    """Q/K/V/O projections + QK^T + PV, per the closed form of the brief."""
    projections = tokens_q * (H * HEADS * HD + HEADS * HD * H) + tokens_k * H * 2 * kv_heads * HD
    return projections + 2 * HEADS * tokens_q * tokens_k * HD


LLAMA = (f"transformers:LlamaForCausalLM?hidden_size={H}&intermediate_size={FF}&num_hidden_layers=1"
         f"&num_attention_heads={HEADS}&num_key_value_heads=2&vocab_size={V}&tie_word_embeddings=true")


def test_llama_grouped_query_attention_swiglu_and_tied_head():
    result = _audit(LLAMA, {"input_ids": IDS})
    assert _macs(result, "model.layers.0.self_attn") == _attention(T, T, kv_heads=2) == 229376
    assert _macs(result, "model.layers.0.mlp") == T * 3 * H * FF  # gate, up, down (SwiGLU)
    assert _macs(result, "lm_head") == T * H * V
    layer = H * H * 2 + 2 * H * 2 * HD + 3 * H * FF + 2 * H  # q, o, k+v (2 kv heads), MLP, 2 RMSNorms
    assert result.totals["params"] == V * H + layer + H  # the tied lm_head stored once


def test_eager_attention_costs_the_same_matmuls():
    result = _audit(LLAMA + "&attn_implementation=eager", {"input_ids": IDS})
    assert _macs(result, "model.layers.0.self_attn") == _attention(T, T, kv_heads=2)


def test_untied_llama_head_is_counted_on_its_own():
    result = _audit(LLAMA.replace("tie_word_embeddings=true", "tie_word_embeddings=false"), {"input_ids": IDS})
    tied = V * H + (H * H * 2 + 2 * H * 2 * HD + 3 * H * FF + 2 * H) + H
    assert result.totals["params"] == tied + V * H


def test_bert_with_attention_mask():
    spec = (f"transformers:BertModel?hidden_size={H}&num_hidden_layers=1&num_attention_heads={HEADS}"
            f"&intermediate_size={FF}&vocab_size={V}&max_position_embeddings=64")
    result = _audit(spec, {"input_ids": IDS, "attention_mask": IDS})
    assert _macs(result, "encoder.layer.0.attention") == _attention(T, T) == 294912
    assert _macs(result, "encoder.layer.0.intermediate") + _macs(result, "encoder.layer.0.output") \
        == T * 2 * H * FF
    assert _macs(result, "pooler") == H * H  # the first token only
    embeddings = V * H + 64 * H + 2 * H + 2 * H  # words, positions, 2 token types, LayerNorm
    layer = 4 * (H * H + H) + (H * FF + FF) + (FF * H + H) + 2 * 2 * H
    assert result.totals["params"] == embeddings + layer + H * H + H


GPT2 = f"transformers:GPT2LMHeadModel?n_embd={H}&n_layer=1&n_head={HEADS}&vocab_size={V}&n_positions=256"


def test_gpt2_default_cache_off_and_default_token_ids():
    """GPT-2's config asks for a key/value cache; the spec turns it off, and
    the default input is 1 x 128 token ids."""
    result = micronet.audit(GPT2)
    assert result.uncounted == ()
    assert result.input_shape == (1, 128)
    tokens = 128
    assert _macs(result, "transformer.h.0.attn") == 4 * H * H * tokens + 2 * HEADS * tokens * tokens * HD
    assert _macs(result, "transformer.h.0.mlp") == tokens * 2 * H * 4 * H
    layer = 2 * H + (3 * H * H + 3 * H) + (H * H + H) + 2 * H + (4 * H * H + 4 * H) + (4 * H * H + H)
    assert result.totals["params"] == V * H + 256 * H + layer + 2 * H  # lm_head = wte, once


def test_t5_encoder_decoder():
    spec = (f"transformers:T5ForConditionalGeneration?d_model={H}&d_kv={HD}&d_ff={FF}&num_layers=1"
            f"&num_decoder_layers=1&num_heads={HEADS}&vocab_size={V}")
    result = _audit(spec, {"input_ids": IDS, "decoder_input_ids": ((1, 8), "int64")})
    assert _macs(result, "encoder.block.0.layer.0") == _attention(T, T)
    assert _macs(result, "decoder.block.0.layer.0") == _attention(8, 8)
    assert _macs(result, "decoder.block.0.layer.1") == _attention(8, T)  # cross-attention
    assert _macs(result, "encoder.block.0.layer.1") == T * 2 * H * FF
    assert _macs(result, "lm_head") == 8 * H * V


def test_clip_images_and_text():
    text = (f"{{'hidden_size':{H},'intermediate_size':{FF},'num_hidden_layers':1,"
            f"'num_attention_heads':{HEADS},'vocab_size':{V},'max_position_embeddings':{T}}}")
    vision = (f"{{'hidden_size':{H},'intermediate_size':{FF},'num_hidden_layers':1,"
              f"'num_attention_heads':{HEADS},'image_size':32,'patch_size':8}}")
    spec = f"transformers:CLIPModel?text_config={text}&vision_config={vision}&projection_dim=32"
    result = _audit(spec, {"input_ids": IDS, "pixel_values": ((1, 3, 32, 32), "float32")})
    patches = (32 // 8) ** 2
    assert _macs(result, "vision_model.embeddings") == patches * 3 * 8 * 8 * H
    assert _macs(result, "vision_model.encoder.layers.0.self_attn") == _attention(patches + 1, patches + 1)
    assert _macs(result, "text_model.encoder.layers.0.self_attn") == _attention(T, T)
    assert _macs(result, "text_model.encoder.layers.0.mlp") == T * 2 * H * FF
    assert _macs(result, "visual_projection") == _macs(result, "text_projection") == H * 32


def test_vision_model_default_input_is_one_image_of_its_configured_size():
    spec = f"transformers:ViTModel?hidden_size={H}&intermediate_size={FF}&num_hidden_layers=1" \
           f"&num_attention_heads={HEADS}&image_size=32&patch_size=8"
    result = micronet.audit(spec)
    assert result.uncounted == ()
    assert result.input_shape == (1, 3, 32, 32)
    tokens = (32 // 8) ** 2 + 1  # 16 patches and the class token
    assert _macs(result, "layers.0.attention") == _attention(tokens, tokens)
    assert _macs(result, "layers.0.mlp") == tokens * 2 * H * FF
    assert _macs(result, "embeddings") == 16 * 3 * 8 * 8 * H


def test_model_is_built_on_meta_in_eval_mode_without_cache():
    resolved = resolve_model(GPT2)
    assert resolved.on_meta and not resolved.model.training
    assert resolved.model.config.use_cache is False
    assert resolved.source == "transformers" and resolved.name.startswith("transformers:GPT2LMHeadModel")


@pytest.mark.parametrize("spec, words", [
    ("transformers:pipeline", "not a model class"),
    ("transformers:PretrainedConfig", "not a model class"),
    ("transformers:PreTrainedModel", "not a model class"),
    ("transformers:os", "has no model class"),
    ("transformers:LlamaForCasualLM", "LlamaForCausalLM"),
    ("transformers:os.system", "has no model class"),
    (GPT2 + "&n_embed=32", "'n_embd'"),
    (GPT2 + "&_attn_implementation=flash_attention_2", "no setting '_attn_implementation'"),
    (GPT2 + "&attn_implementation=kernels-community/flash-attn", "attn_implementation="),
])
def test_refused_specs_say_why_in_one_line(spec, words):
    with pytest.raises(SpecError) as info:
        resolve_model(spec)
    assert isinstance(info.value, UsageError)
    text = str(info.value)
    assert words in text and "\n" not in text.strip(), text


# ------------------------------------------- counters/transformers_ops.py, closed forms

def test_mask_and_scan_counters_closed_form():
    import torch

    from micronet.counters import transformers_ops as ops
    from micronet.records import Counts, TensorInfo
    from micronet.registry import OpCall

    aten = torch.ops.aten
    mask = TensorInfo((1, 1, 16, 16), torch.bool)
    both = OpCall("aten", aten.__and__.Tensor, (mask, mask), {}, out=mask)
    assert ops.count_dunder_bitwise(both) == Counts(other_ops=256)  # 1 bitwise op per element
    ids = TensorInfo((2, 10), torch.int64)
    once = OpCall("aten", aten.diff.default, (ids,), {}, out=TensorInfo((2, 9), torch.int64))
    assert ops.count_diff(once) == Counts(adds=2 * 9)
    twice = OpCall("aten", aten.diff.default, (ids, 2, 1), {}, out=TensorInfo((2, 8), torch.int64))
    assert ops.count_diff(twice) == Counts(adds=2 * (9 + 8))  # 9 then 8 differences per row
    rows = OpCall("aten", aten.argmax.default, (TensorInfo((3, 7)), -1), {}, out=TensorInfo((3,), torch.int64))
    assert ops.count_argmax(rows) == Counts(adds=3 * 6)
    flat = OpCall("aten", aten.argmax.default, (TensorInfo((3, 7)),), {}, out=TensorInfo((), torch.int64))
    assert ops.count_argmax(flat) == Counts(adds=20)


# ------------------------------------------- default inputs from the configuration

T5 = (f"transformers:T5ForConditionalGeneration?d_model={H}&d_kv={HD}&d_ff={FF}&num_layers=1"
      f"&num_decoder_layers=1&num_heads={HEADS}&vocab_size={V}")


def test_default_inputs_come_from_the_configuration():
    from micronet.models_transformers import default_inputs_of

    spec = (f"transformers:BertModel?hidden_size={H}&num_hidden_layers=1&num_attention_heads={HEADS}"
            f"&intermediate_size={FF}&vocab_size={V}&max_position_embeddings=64")
    bert = resolve_model(spec)
    assert bert.input_shape == (1, 64)  # 128 tokens capped at its 64 positions
    assert default_inputs_of(bert.model) == {"input_ids": ((1, 64), "int64")}
    result = micronet.audit(spec)  # 128 tokens would not fit its 64 position embeddings
    assert result.uncounted == () and result.input_shape == (1, 64)
    assert _macs(result, "encoder.layer.0.attention") == _attention(64, 64)
    assert default_inputs_of(resolve_model(T5).model) == {"input_ids": ((1, 128), "int64"),
                                                          "decoder_input_ids": ((1, 128), "int64")}


def test_t5_default_inputs_audit_with_the_closed_form():
    from micronet.models_transformers import default_inputs_of

    model = resolve_model(T5).model
    result = _audit(model, default_inputs_of(model))
    tokens = 128
    assert result.input_text == "input_ids 1x128 int64, decoder_input_ids 1x128 int64"
    assert _macs(result, "encoder.block.0.layer.0") == _attention(tokens, tokens)
    assert _macs(result, "decoder.block.0.layer.1") == _attention(tokens, tokens)  # cross-attention
    assert _macs(result, "lm_head") == tokens * H * V


def test_a_spec_audited_without_inputs_gets_every_default_input(capsys):
    """No input given: a transformers spec needing several inputs gets them all
    from its configuration, through the API and the CLI (the header says them)."""
    from micronet.cli import main

    result = micronet.audit(T5)
    assert result.input_text == "input_ids 1x128 int64, decoder_input_ids 1x128 int64"
    assert _macs(result, "decoder.block.0.layer.1") == _attention(128, 128)
    assert main(["audit", T5, "--top", "1"]) == 0
    assert "input_ids 1x128 int64, decoder_input_ids 1x128 int64" in capsys.readouterr().out


def test_clip_default_inputs_are_its_text_length_and_image_size():
    from micronet.models_transformers import default_inputs_of

    text = (f"{{'hidden_size':{H},'intermediate_size':{FF},'num_hidden_layers':1,"
            f"'num_attention_heads':{HEADS},'vocab_size':{V},'max_position_embeddings':{T}}}")
    vision = (f"{{'hidden_size':{H},'intermediate_size':{FF},'num_hidden_layers':1,"
              f"'num_attention_heads':{HEADS},'image_size':32,'patch_size':8}}")
    model = resolve_model(f"transformers:CLIPModel?text_config={text}&vision_config={vision}&projection_dim=32").model
    inputs = default_inputs_of(model)
    assert inputs == {"input_ids": ((1, T), "int64"), "pixel_values": ((1, 3, 32, 32), "float32")}
    result = _audit(model, inputs)
    assert _macs(result, "vision_model.encoder.layers.0.self_attn") == _attention(17, 17)  # 16 patches + class
    assert _macs(result, "text_model.encoder.layers.0.self_attn") == _attention(T, T)
