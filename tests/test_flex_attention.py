"""A whole model calling ``flex_attention`` audits with nothing uncounted, on
the fx path (the function kept as one node) and the torch.export path (the
higher-order op kept whole, its block mask's construction free), and its
attention multiply-accumulates are SDPA's closed form at the same shapes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention import flex_attention as fa
from torch.utils.flop_counter import FlopCounterMode

import micronet

B, L, D, H = 2, 8, 16, 2  # batch, sequence, model width, heads
E = D // H  # head dim
P = B * H * L * L  # scores
PROJECTION_MACS = 3 * B * L * D * D  # q, k, v: Linear(D, D) on B * L tokens
ATTENTION_MACS = B * H * L * L * E + B * H * L * E * L  # QK^T and attn @ V
MULTS = P * E + P + P + B * H * L * E * L  # QK^T, scale, softmax division, attn @ V
ADDS = P * (E - 1) + B * H * L * (L - 1) + B * H * L * E * (L - 1) + 2 * P  # + score_mod's add and sub


def relative_bias(score, b, h, q_idx, kv_idx):
    return score + (q_idx - kv_idx)  # one add, one sub per score


def causal(b, h, q_idx, kv_idx):
    return q_idx >= kv_idx  # one comparison per score


class FlexModel(nn.Module):
    """q, k, v projections, then flex_attention (with a causal block mask when ``masked``)."""

    def __init__(self, masked: bool, sdpa: bool = False, untraceable: bool = False):
        super().__init__()
        self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        self.masked, self.sdpa, self.untraceable = masked, sdpa, untraceable

    def forward(self, x):
        b = x.shape[0]
        length = int(x.shape[1]) if self.untraceable else L  # int() of an fx proxy fails: export is used
        q, k, v = (p(x).view(b, length, H, E).transpose(1, 2) for p in (self.q, self.k, self.v))
        if self.sdpa:
            return F.scaled_dot_product_attention(q, k, v)
        mask = fa.create_block_mask(causal, None, None, L, L, device="cpu") if self.masked else None
        return torch.nn.attention.flex_attention.flex_attention(q, k, v, score_mod=relative_bias, block_mask=mask)


def attention_record(result):
    (record,) = [r for r in result.records if r.counts.other_ops]  # the exps (and the mask's comparison)
    return record


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("path", ["fx", "export"])
def test_flex_attention_model_is_counted_whole(path, masked):
    # parameters requiring grad, as a user's model has them: the export runs under no_grad
    # (flex_attention has no CPU backward, so exporting for training would fail)
    model = FlexModel(masked, untraceable=path == "export")
    assert all(p.requires_grad for p in model.parameters())
    result = micronet.audit(model, (B, L, D), freebie=False)
    assert result.captured_via == path
    assert not result.uncounted
    counts = attention_record(result).counts
    # the causal mask: its comparison (one other op) and its -inf select (one add) on every score
    assert (counts.mults, counts.adds, counts.other_ops) == (MULTS, ADDS + masked * P, P + masked * P)
    assert result.totals["macs"] == PROJECTION_MACS + ATTENTION_MACS


def test_flex_attention_macs_are_sdpa_macs():
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, L, E), torch.randn(B, H, L, E)
    # the math kernel's matmuls (torch's flop counter sees no flops in the fused CPU kernel)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as flops:
        F.scaled_dot_product_attention(q, k, v)
    assert flops.get_total_flops() == 2 * ATTENTION_MACS  # torch's count is the closed form
    flex = micronet.audit(FlexModel(False), (B, L, D), freebie=False)
    sdpa = micronet.audit(FlexModel(False, sdpa=True), (B, L, D), freebie=False)
    assert flex.totals["macs"] == sdpa.totals["macs"] == PROJECTION_MACS + ATTENTION_MACS


def test_fx_capture_keeps_flex_attention_as_one_node():
    model = FlexModel(True)
    result = micronet.audit(model, (B, L, D), freebie=False)
    assert [r.name for r in result.records if "flex" in r.name] == ["flex_attention"]
    from micronet.capture import trace_fx
    from micronet.manager import default_registries

    gm, _ = trace_fx(model, default_registries().counters).graph_module()
    with torch.no_grad():  # flex_attention has no CPU backward
        out = gm(torch.randn(B, L, D))  # the score_mod and block mask are constants of the graph module
    assert out.shape == (B, H, L, E)
    # its code must not register fx.wrap on a dotted name: every later trace would fail (KeyError)
    assert len(torch.fx.symbolic_trace(nn.Sequential(nn.ReLU())).graph.nodes) == 3


def test_an_audit_leaves_the_users_model_without_tracer_constants():
    # fx keeps flex_attention's score_mod as a constant of the traced module: gone after the audit
    model = FlexModel(masked=False)
    before = set(vars(model))
    assert micronet.audit(model, (B, L, D)).captured_via == "fx"
    assert set(vars(model)) == before


def test_a_flex_attention_archive_cannot_be_saved_and_says_so_in_one_line(tmp_path):
    """torch.export.save cannot serialise flex_attention (its serialiser fails with
    a dump of the node): micronet's save refuses up front, in one line."""
    from micronet.errors import SpecError
    from micronet.exportfile import save_export, unsavable_ops

    with torch.no_grad():
        exported = torch.export.export(FlexModel(True), (torch.zeros(B, L, D),), strict=False)
    assert unsavable_ops(exported) == ["flex_attention"]
    with pytest.raises(SpecError) as caught:
        save_export(exported, tmp_path / "model.pt2")
    assert "\n" not in str(caught.value)
    assert "does not serialise flex_attention" in str(caught.value)
    assert not (tmp_path / "model.pt2").exists()
    # a model without it is written as torch writes it
    plain = torch.export.export(nn.Linear(D, D), (torch.zeros(B, D),), strict=False)
    save_export(plain, tmp_path / "linear.pt2")
    assert unsavable_ops(plain) == [] and (tmp_path / "linear.pt2").stat().st_size > 0


def test_a_compress_run_on_a_flex_attention_model_keeps_its_weights_and_says_why_no_archive(tmp_path):
    """The run's final model cannot become model.pt2 (torch cannot serialise
    flex_attention): state_dict.pt is written and the log says why in one line."""
    from micronet.pipeline import compress

    lines = []
    recipe = {"model": {"spec": "unused", "input": [B, L, D]}, "score": {"track": "cifar100"},
              "step": [{"use": "sparsify", "amount": 0.5}]}
    compress(recipe, model=FlexModel(False), out=tmp_path / "run", log=lines.append)
    saved = torch.load(tmp_path / "run" / "state_dict.pt")
    assert set(saved) == {f"{p}.{w}" for p in "qkv" for w in ("weight", "bias")}
    assert not (tmp_path / "run" / "model.pt2").exists()
    (why,) = [line for line in lines if "model.pt2" in line]
    assert "does not serialise flex_attention" in why and "\n" not in why
