"""The wikitext103 track (MicroNet 2019's language track) and its reference LSTM.

Figures below are hand arithmetic from the model's sizes: V = 267,735 words,
E = 512 (tied embedding), H = 2048 LSTM units, a 2048 -> 512 projection.
"""
from __future__ import annotations

import json

import pytest
import torch

from micronet.audit import audit, default_registries
from micronet.cli import main
from micronet.errors import UsageError
from micronet.models import wikitext103_lstm
from micronet.models.lstm_lm import WIKITEXT103_VOCAB
from micronet.resolve import resolve_model
from micronet.rules import CIFAR100, DIGITS, IMAGENET, WIKITEXT103, Track

V, E, H = 267_735, 512, 2048
# parameters: embedding (shared with the softmax), LSTM (two biases), projection, softmax bias
PARAMS = V * E + (4 * H * E + 4 * H * H + 2 * 4 * H) + (H * E + E) + V
# one token: LSTM gates 4H(E+H) MACs plus 9H mults (sigmoids 2 each, cell and output
# products), 8H bias/sigmoid/cell adds, 2H tanh; projection H*E; softmax V*E
MULTS = 4 * H * (E + H) + 9 * H + H * E + V * E
ADDS = 4 * H * (E + H) + 8 * H + (E * (H - 1) + E) + (V * (E - 1) + V)
OTHER = 2 * H


def test_the_track_has_the_official_constants():
    track = default_registries().tracks["wikitext103"]
    assert track is WIKITEXT103
    assert (track.reference_params, track.reference_ops, track.quality_bar) == (159e6, 318e6, 35.0)
    assert (track.metric, track.higher_is_better, track.input_shape) == ("perplexity", False, (1, 1))
    assert track.num_classes == WIKITEXT103_VOCAB == V


def test_a_perplexity_bar_is_a_maximum_and_top1_stays_a_minimum():
    assert [WIKITEXT103.meets_bar(p) for p in (29.2, 35.0, 35.1, None)] == [True, True, False, None]
    assert [CIFAR100.meets_bar(a) for a in (80.0, 79.9, None)] == [True, False, None]
    assert (CIFAR100.metric, IMAGENET.metric, DIGITS.metric) == ("top1",) * 3
    assert IMAGENET.higher_is_better and IMAGENET.meets_bar(75.0) and not IMAGENET.meets_bar(74.9)


def test_an_unknown_metric_is_refused_naming_the_choices():
    with pytest.raises(UsageError, match=r"track 'x': unknown metric 'bleu'; use one of 'top1', 'perplexity'"):
        Track("x", "d", "m", 1.0, 1.0, 1.0, (1, 1), 2, metric="bleu")


def test_the_reference_resolves_on_meta_with_the_closed_form_parameters():
    resolved = resolve_model("micronet:wikitext103_lstm")
    assert resolved.on_meta and resolved.input_shape == (1, 1)
    params = list(resolved.model.parameters())  # the tied weight once
    assert all(p.is_meta for p in params)  # 159M parameters, no memory
    assert sum(p.numel() for p in params) == PARAMS == 159_385_047
    assert resolved.model.decoder.weight is resolved.model.embedding.weight


def test_the_reference_scores_about_2_per_token_online(capsys, tmp_path):
    code = main(["audit", "micronet:wikitext103_lstm", "--track", "wikitext103", "--no-freebie",
                 "--json", str(tmp_path / "r.json")])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["track"] == "wikitext103" and doc["input_shape"] == [1, 1]  # one token, batch 1
    totals = doc["totals"]
    assert totals["storage"] == totals["params"] == PARAMS
    assert (totals["mults"], totals["adds"], totals["other_ops"]) == (MULTS, ADDS, OTHER)
    assert (MULTS, ADDS, OTHER) == (159_118_848, 159_116_800, 4_096)
    assert totals["ops"] == MULTS + ADDS + OTHER == 318_239_744
    assert totals["macs"] == 4 * H * (E + H) + H * E + V * E == 159_100_416
    assert doc["score"]["total"] == pytest.approx(PARAMS / 159e6 + (MULTS + ADDS + OTHER) / 318e6, rel=1e-12)
    assert doc["score"]["total"] == pytest.approx(2.0031756, abs=1e-7)


def test_the_freebie_halves_parameters_and_multiplies():
    result = audit("micronet:wikitext103_lstm", track="wikitext103")
    assert result.meets_bar is None  # perplexity is not measured offline
    assert result.scoring.totals["storage"] == PARAMS / 2
    assert result.scoring.totals["ops"] == MULTS / 2 + ADDS + OTHER
    assert result.scoring.score.total == pytest.approx((PARAMS / 2) / 159e6 + (MULTS / 2 + ADDS + OTHER) / 318e6,
                                                       rel=1e-12)


def test_a_small_one_runs_for_real_on_token_ids():
    torch.manual_seed(0)
    model = wikitext103_lstm(vocab_size=11, embed_dim=4, hidden_size=6).eval()
    # 11*4 + 4*6*(4 + 6) + 2*24 + 6*4 + 4 + 11
    assert sum(p.numel() for p in model.parameters()) == 44 + 240 + 48 + 28 + 11
    ids = torch.tensor([[3, 1, 4]])
    logits = model(ids)
    assert logits.shape == (1, 3, 11)
    # online: feeding the first token alone gives the sequence's first logits
    assert torch.allclose(model(ids[:, :1])[0, 0], logits[0, 0])
    # the softmax reads the embedding: logits = proj(h) @ embedding.T + bias
    h, _ = model.lstm(model.embedding(ids))
    assert torch.allclose(logits, model.proj(h) @ model.embedding.weight.T + model.softmax_bias.bias)


def test_a_perplexity_track_words_its_bar_as_a_maximum(capsys):
    from types import SimpleNamespace

    from micronet.cli import _verdict
    from micronet.schedule import Until, check_until

    assert (WIKITEXT103.bar_text(), WIKITEXT103.bar_text(unicode=True)) == ("perplexity <= 35", "perplexity ≤ 35")
    assert (CIFAR100.bar_text(), CIFAR100.bar_text(unicode=True)) == ("top-1 >= 80%", "top-1 ≥ 80%")
    assert WIKITEXT103.compare_text(29.2) == "perplexity 29.20 <= 35"
    assert WIKITEXT103.compare_text(36.1) == "perplexity 36.10 > 35"
    final = SimpleNamespace(track=WIKITEXT103, accuracy=None, meets_bar=None)
    assert _verdict(final) == ("perplexity was not measured (no [data] table): the score counts only if "
                               "perplexity <= 35 on wikitext103")
    final = SimpleNamespace(track=WIKITEXT103, accuracy=36.1, meets_bar=False)
    assert _verdict(final) == "the final model does NOT qualify: perplexity 36.10 > 35 (wikitext103)"
    assert check_until(Until(bar=True), SimpleNamespace(track=WIKITEXT103, meets_bar=None, accuracy=None)) \
        == (False, "the wikitext103 bar (perplexity <= 35) not met")
    assert main(["audit", "micronet:wikitext103_lstm", "--track", "wikitext103"]) == 0
    assert "bar perplexity <= 35)" in capsys.readouterr().out


def test_finetune_refuses_to_stop_at_a_perplexity_bar_it_cannot_measure():
    from types import SimpleNamespace

    from micronet.plugins.finetune import _target

    context = SimpleNamespace(data={"dataset": "digits"}, result=SimpleNamespace(track=WIKITEXT103),
                              note=lambda key, value: None)
    with pytest.raises(UsageError, match=r"until_bar: the wikitext103 track's bar is perplexity <= 35, and "
                                         r"finetune measures top-1"):
        _target({"until_accuracy": 0, "until_bar": True}, context)


def test_terminal_and_page_say_perplexity_on_the_language_track():
    """On a perplexity track every quality line speaks perplexity, never top-1 or percent."""
    from dataclasses import replace

    from micronet.reports.html import render_audit_html
    from micronet.reports.table import render_table as format_table

    result = audit("micronet:wikitext103_lstm", track="wikitext103")
    text = format_table(result)
    assert "quality    perplexity not measured (micronet measures top-1 only; the bar is perplexity <= 35)" in text
    measured = replace(result, accuracy=34.2)
    assert "quality    perplexity 34.20 <= 35 on wikitext103: meets the bar" in format_table(measured)
    page = render_audit_html(measured)
    assert "perplexity ≤ 35 on wikitext103 · perplexity <b>34.20</b>" in page
    assert "34.20%" not in page
