"""Ops per token of language models (micronet.per_token, ``--per-token T``):
a prefill of T tokens divided by T, and one decode step after T tokens (a
key/value cache of T for a transformer, the carried state of an LSTM), the
decode step scored. MACs against hand closed forms; tiny configurations
(hidden 64, 4 heads of 16, context 32 tokens)."""
import json

import pytest

from micronet.audit import audit
from micronet.cli import main
from micronet.errors import UsageError
from micronet.per_token import audit_per_token

H, HEADS, HD, FF, V, T = 64, 4, 16, 128, 100, 32  # hidden, heads, head dim, MLP width, vocab, context
GPT2 = f"transformers:GPT2LMHeadModel?n_embd={H}&n_layer=2&n_head={HEADS}&vocab_size={V}&n_positions=256"
LLAMA = (f"transformers:LlamaForCausalLM?hidden_size={H}&intermediate_size={FF}&num_hidden_layers=1"
         f"&num_attention_heads={HEADS}&num_key_value_heads=2&vocab_size={V}&tie_word_embeddings=true")


def _macs(result, prefix):
    """MACs of the module ``prefix`` and everything under it."""
    return sum(cost.macs for record, cost in result.layers
               if record.name == prefix or record.name.startswith(prefix + "."))


def _scores(keys):
    """q.k and attn.v of one query against ``keys`` keys, all heads: 2 x heads x head_dim x keys."""
    return 2 * HEADS * HD * keys


def test_gpt2_decode_step_reads_a_cache_of_t_and_prefill_is_shown_per_token():
    pt = audit_per_token(GPT2, T)
    decode, prefill = pt.decode, pt.prefill
    assert decode.uncounted == () and prefill.uncounted == ()
    assert pt.kind == "kv-cache" and pt.result is decode and decode.track.name == "wikitext103"
    assert [(i.name, i.shape) for i in decode.inputs] == [("input_ids", (1, 1)), ("past", (2, 2, 1, HEADS, T, HD))]
    for layer in ("transformer.h.0", "transformer.h.1"):
        # c_attn (QKV) 3H^2 + c_proj H^2 on the new token; attention against T + 1 keys
        assert _macs(decode, f"{layer}.attn") == 4 * H * H + _scores(T + 1) == 20608
        assert _macs(decode, f"{layer}.mlp") == 2 * H * 4 * H
    assert _macs(decode, "lm_head") == H * V
    per_layer = 12 * H * H
    assert decode.totals["macs"] == 2 * (per_layer + _scores(T + 1)) + H * V == 113_152
    # prefill: T tokens, causal attention counted over the full T x T scores (as the counters do)
    assert prefill.totals["macs"] == T * (2 * per_layer + H * V) + 2 * 2 * HEADS * T * T * HD
    assert pt.prefill_per_token()["macs"] == 2 * (per_layer + _scores(T)) + H * V == 112_896
    # the cache is an activation: storage is the parameters', the same in both
    layer = 2 * H + (3 * H * H + 3 * H) + (H * H + H) + 2 * H + (4 * H * H + 4 * H) + (4 * H * H + H)
    assert decode.totals["params"] == prefill.totals["params"] == V * H + 256 * H + 2 * layer + 2 * H


def test_llama_decode_step_grouped_query_attention_against_t_plus_1_keys():
    pt = audit_per_token(LLAMA, T)
    decode = pt.decode
    assert decode.uncounted == () and pt.prefill.uncounted == ()
    assert decode.inputs[1].shape == (1, 2, 1, 2, T, HD)  # 2 key/value heads cached
    projections = H * H + 2 * H * 2 * HD + H * H  # q, k and v (2 kv heads), o: one token
    assert _macs(decode, "model.layers.0.self_attn") == projections + _scores(T + 1) == 16_512
    assert _macs(decode, "model.layers.0.mlp") == 3 * H * FF  # gate, up, down (SwiGLU)
    assert decode.totals["macs"] == projections + _scores(T + 1) + 3 * H * FF + H * V == 47_488
    assert pt.prefill_per_token()["macs"] == projections + _scores(T) + 3 * H * FF + H * V == 47_360


def test_the_reference_lstm_per_token_equals_its_one_token_audit():
    pt = audit_per_token("micronet:wikitext103_lstm", 16, freebie=False)
    one = audit("micronet:wikitext103_lstm", track="wikitext103", freebie=False)
    assert pt.kind == "recurrent" and pt.decode.input_shape == (1, 1) and pt.prefill.input_shape == (1, 16)
    assert pt.decode.totals == one.totals
    assert pt.prefill_per_token()["ops"] == pt.decode_per_token()["ops"] == one.totals["ops"] == 318_239_744
    assert pt.prefill_per_token()["macs"] == 159_100_416
    assert pt.decode_per_token()["score"] == pytest.approx(2.0031756, abs=1e-7)


def test_cli_per_token_shows_both_figures_and_writes_them_to_json(capsys, tmp_path):
    path = tmp_path / "lm.json"
    code = main(["audit", LLAMA, "--per-token", str(T), "--track", "wikitext103", "--json", str(path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "input input_ids 1x1 int64, past 1x2x1x2x32x16" in out  # the decode step's inputs in the header
    assert f"per token: context T = {T} tokens, batch 1 (wikitext103 scores the decode step" in out
    assert f"  prefill: {T} tokens at once / {T}:" in out and "47.4K MACs) per token" in out
    assert f"  decode: one token after a key/value cache of {T}:" in out and "47.5K MACs) per token" in out
    assert "<- scored" in out and "bar perplexity <= 35" in out
    doc = json.loads(path.read_text())
    assert doc["track"] == "wikitext103" and doc["per_token"]["scored"] == "decode"
    assert doc["per_token"]["context"] == T and doc["per_token"]["decode"]["cache"] == T
    assert doc["per_token"]["decode"]["per_token"]["macs"] == doc["totals"]["macs"] == 47_488
    assert doc["per_token"]["prefill"]["per_token"]["macs"] == 47_360
    assert doc["per_token"]["prefill"]["totals"]["macs"] == T * 47_360
    section = next(lines for title, lines in doc["sections"].items() if title.startswith("per token"))
    assert [label for label, _ in section] == ["prefill", "decode"]


def test_cli_refusals_are_one_line(capsys):
    code = main(["audit", "micronet:wikitext103_lstm", "--per-token", "8", "--input", "1x8"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "a per-token audit chooses its inputs (8 token ids, then one): input_shape (--input)" in err
    with pytest.raises(SystemExit):
        main(["audit", "micronet:wikitext103_lstm", "--per-token", "0"])
    assert "--per-token: expected a whole number of at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("spec, context, words", [
    ("micronet:digits_cnn", 8, "needs a transformers causal LM"),
    ("micronet:wikitext103_lstm", 0, "context=0: expected a number of tokens >= 1"),
    (f"transformers:T5ForConditionalGeneration?d_model={H}&d_kv={HD}&d_ff={FF}&num_layers=1&num_heads={HEADS}"
     f"&vocab_size={V}", 8, "decodes a causal language model"),
])
def test_api_refusals_name_the_fix(spec, context, words):
    with pytest.raises(UsageError) as info:
        audit_per_token(spec, context)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_module_with_real_weights_and_a_cache_in_its_config_is_left_as_it_came():
    import torch
    import transformers

    config = transformers.GPT2Config(n_embd=H, n_layer=2, n_head=HEADS, vocab_size=V, n_positions=T + 1)
    assert config.use_cache  # a prefill returning its cache: the per-token audit asks for logits alone
    model = transformers.GPT2LMHeadModel(config)
    before = {name: p.clone() for name, p in model.named_parameters()}
    pt = audit_per_token(model, T)
    assert model.training and all(not p.is_meta for p in model.parameters())  # its mode given back
    assert all(torch.equal(before[name], p) for name, p in model.named_parameters())
    assert pt.decode.totals["macs"] == 113_152 and pt.prefill_per_token()["macs"] == 112_896  # as on meta
    assert _macs(pt.prefill, "transformer.h.1.mlp") == T * 2 * H * 4 * H  # the model's own layer names
    with pytest.raises(UsageError, match=rf"need {T + 2} positions, and the model has {T + 1} "
                                         rf"\(max_position_embeddings\) \(hint: give a context of at most {T} "):
        audit_per_token(model, T + 1)
