"""audit(): reference figures, precision and sparsity from the model, errors."""
import json

import pytest
import torch
from torch import nn

import micronet
from micronet.bits import set_bits
from micronet.errors import SpecError, TraceError, UsageError


@pytest.fixture(scope="module")
def wrn():
    return micronet.audit("micronet:wrn_28_10", (1, 3, 32, 32), track="cifar100", freebie=False)


def test_wrn_28_10_matches_the_published_reference(wrn):
    # RULES.md: 36.5M params and 10.49B ops; about 5.243B mults + 5.241B adds
    assert wrn.totals["params"] == pytest.approx(36.5e6, rel=0.005)
    assert wrn.score.ops == pytest.approx(10.49e9, rel=0.01)
    assert wrn.totals["mults"] == pytest.approx(5.243e9, rel=0.01)
    assert wrn.totals["adds"] == pytest.approx(5.241e9, rel=0.01)
    assert wrn.score.total == pytest.approx(2.0, abs=0.02)
    assert not wrn.uncounted


def test_wrn_with_the_freebie_counts_params_and_mults_at_16_bits(wrn):
    with_freebie = wrn.rescore(micronet.ScoreOptions(freebie=True))
    assert with_freebie.score.freebie
    assert with_freebie.score.storage == pytest.approx(wrn.score.storage / 2)
    expected_ops = wrn.totals["mults"] / 2 + wrn.totals["adds"] + wrn.totals["other_ops"]
    assert with_freebie.score.ops == pytest.approx(expected_ops)


def test_to_dict_has_the_documented_keys(wrn):
    doc = wrn.to_dict()
    assert {"model", "input_shape", "rulebook", "track", "freebie", "score", "totals", "layers",
            "uncounted"} <= set(doc)
    assert set(doc["score"]) == {"total", "storage_term", "ops_term"}
    assert {"params", "nonzero_params", "storage", "mults", "adds", "ops"} <= set(doc["totals"])
    layer = doc["layers"][0]
    assert {"name", "op", "params", "nonzero_params", "storage", "mults", "adds", "ops",
            "weight_bits", "input_bits", "accumulator_bits"} <= set(layer)
    json.dumps(doc)  # serialisable
    assert doc["totals"]["params"] == sum(l["params"] for l in doc["layers"])


def test_rows_show_the_rulebooks_numbers_and_name_their_rule(wrn):
    rows = wrn.rows()
    assert [r["macs"] for r in rows] == [cost.macs for cost in wrn.scoring.layers]
    assert sum(r["macs"] for r in rows) == pytest.approx(wrn.totals["macs"])
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert all(r["rule"] and r["plugin"] for r in rows if r["status"] == "counted")


class Tiny(nn.Module):
    """conv(3->8, 3x3, no bias) -> relu -> global pool -> linear(8->10)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.relu(self.conv(x))), 1))


def test_tiny_model_closed_form():
    r = micronet.audit(Tiny(), (1, 3, 8, 8), freebie=False)
    conv_mults = 8 * 8 * 8 * 27  # 512 outputs x 27 terms
    conv_adds = 8 * 8 * 8 * 26
    relu = 8 * 64
    pool_mults, pool_adds = 8, 8 * 63
    fc_mults, fc_adds = 10 * 8, 10 * 7 + 10
    assert r.totals["mults"] == conv_mults + relu + pool_mults + fc_mults
    assert r.totals["adds"] == conv_adds + pool_adds + fc_adds
    assert r.totals["params"] == 8 * 27 + 8 * 10 + 10
    assert r.score.storage == 8 * 27 + 90


def test_measured_sparsity_changes_storage_and_ops_as_the_rules_say():
    model = Tiny()
    generator = torch.Generator().manual_seed(1)
    zeros = torch.randperm(216, generator=generator)[:144]  # 2/3 zero: 72 nonzeros of 216
    with torch.no_grad():
        model.conv.weight.view(-1)[zeros] = 0
    r = micronet.audit(model, (1, 3, 8, 8), freebie=False)
    record, conv = next((rec, cost) for rec, cost in r.layers if rec.name == "conv")
    assert record.weight_block == (1,)
    assert conv.storage == 72 + 216 / 32  # nonzeros + 1 bit per element
    assert conv.mults == 512 * 9  # L = 27 * 1/3
    assert conv.adds == 512 * 8


def test_zeros_in_blocks_pay_one_bit_per_block():
    model = Tiny()
    with torch.no_grad():
        model.conv.weight[:, :, :, :2] = 0  # the same 2 of every 3 columns in all 8 filters
    r = micronet.audit(model, (1, 3, 8, 8), freebie=False)
    record, conv = next((rec, cost) for rec, cost in r.layers if rec.name == "conv")
    assert record.weight_block == (8, 1)  # blocks of 8 filters x 1 position
    assert conv.storage == 72 + (216 / 8) / 32


def test_half_model_is_16_bit_everywhere():
    r = micronet.audit(Tiny().half(), (1, 3, 8, 8), freebie=False)
    counted = [x for x in r.records if x.status == "counted"]
    assert {x.input_bits for x in counted} == {16}
    assert {x.weight_bits for x in counted if x.params} == {16}
    full = micronet.audit(Tiny(), (1, 3, 8, 8), freebie=True)
    assert r.score.storage == full.score.storage  # fp16 = freebie for params


def test_bit_overrides_and_freebie_loss():
    r = micronet.audit(Tiny(), (1, 3, 8, 8), bits=["conv=8"], act_bits={"*": 8})
    assert not r.score.freebie
    conv = next(x for x in r.records if x.name == "conv")
    assert conv.weight_bits == 8 and conv.input_bits == 8
    fc = next(x for x in r.records if x.name == "fc")
    assert fc.weight_bits == 32


def test_what_if_grid_without_retracing():
    r = micronet.audit(Tiny(), (1, 3, 8, 8))
    grid = r.what_if("bits=32,8;sparsity=0,0.5")
    assert len(grid.cells) == 4
    assert grid.cells[0].total == pytest.approx(r.score.total)
    assert grid.best().level("bits") == 8 and grid.best().level("sparsity") == 0.5
    with pytest.raises(UsageError, match="sparsity"):
        r.what_if(sparsity=[1.5])
    with pytest.raises(UsageError, match="axis"):
        r.what_if("colour=1,2")


def test_default_input_comes_from_the_track():
    r = micronet.audit("micronet:resnet18_cifar", track="cifar100")
    assert r.input_shape == (1, 3, 32, 32)


@pytest.mark.parametrize("shape", ["1x3xfoo", "0x3x32x32", "", (1, -3, 4)])
def test_bad_input_shape(shape):
    with pytest.raises(UsageError, match="input shape"):
        micronet.audit(Tiny(), shape)


def test_input_shape_that_does_not_fit_the_model():
    with pytest.raises(micronet.MicronetError, match="conv|shape|channels"):
        micronet.audit(Tiny(), (1, 5, 8, 8))


def test_unknown_track_and_rulebook():
    with pytest.raises(UsageError, match="unknown track 'cifar1000'.*cifar100"):
        micronet.audit(Tiny(), (1, 3, 8, 8), track="cifar1000")
    with pytest.raises(UsageError, match="unknown rulebook"):
        micronet.audit(Tiny(), (1, 3, 8, 8), rulebook="micronet-2099")


def test_bad_spec_suggests_names():
    with pytest.raises(SpecError, match="resnet18"):
        micronet.audit("resnet19")


class Untraceable(nn.Module):
    """Neither fx nor export can capture a forward that calls .item() on data."""

    def forward(self, x):
        n = int(x.sum().item())
        return x.repeat(1 + n % 2, 1)


def test_untraceable_model_is_one_clear_error():
    with pytest.raises(TraceError, match="torch.fx failed.*torch.export failed"):
        micronet.audit(Untraceable(), (2, 3))


def test_plugins_set_bits_through_the_contract():
    model = Tiny()
    set_bits(model.conv, weight=4, input=8)
    set_bits(model.fc, accumulator=16)
    r = micronet.audit(model, (1, 3, 8, 8))
    conv = next(x for x in r.records if x.name == "conv")
    fc = next(x for x in r.records if x.name == "fc")
    assert (conv.weight_bits, conv.input_bits) == (4, 8) and fc.accumulator_bits == 16
    assert not r.score.freebie  # 4-bit weights lose it


class ConstantClass(nn.Module):
    """Always predicts class 0 (a conv so that there is something to count)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 10, 1)

    def forward(self, x):
        logits = self.conv(x).mean((2, 3)) * 0
        return logits + torch.nn.functional.one_hot(torch.tensor([0]), 10).to(x.dtype)


def test_accuracy_is_measured_and_checked_against_the_bar():
    from micronet.training.data import load_dataset

    labels = load_dataset("fake", False, input_shape=(1, 3, 8, 8), num_classes=10).targets
    expected = 100 * labels.count(0) / len(labels)
    r = micronet.audit(ConstantClass(), (1, 3, 8, 8), track="cifar10", data="fake")
    assert r.accuracy == pytest.approx(expected)
    assert r.meets_bar is False  # far below 90%
    assert r.to_dict()["accuracy"] == {"top1": r.accuracy, "quality_bar": 90.0, "meets_bar": False,
                                       "metric": "top1"}
    assert micronet.audit(ConstantClass(), (1, 3, 8, 8)).meets_bar is None


def test_accuracy_needs_weights():
    with pytest.raises(UsageError, match="needs the model's weights"):
        micronet.audit("micronet:resnet18_cifar", data="fake")


class TokenClassifier(nn.Module):
    """Token ids in: the audit must feed int64 ids, not floats."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(100, 16)
        self.fc = nn.Linear(16, 3)

    def forward(self, ids):
        return self.fc(self.embed(ids).mean(1))


def test_a_model_starting_with_an_embedding_gets_token_ids():
    result = micronet.audit(TokenClassifier(), (2, 7))
    assert not result.uncounted
    embed = next(r for r in result.records if r.name == "embed")
    assert embed.input_bits == 32 and embed.output_shapes == ((2, 7, 16),)
    fc = next(r for r in result.records if r.name == "fc")
    assert fc.counts.dot_products == 2 * 3 and fc.counts.dot_length == 16
    half = micronet.audit(Tiny(), (1, 3, 8, 8), input_dtype="float16")
    assert {r.input_bits for r in half.records if r.op == "conv2d"} == {16}


def test_bad_input_dtype_is_a_usage_error():
    with pytest.raises(UsageError, match="input dtype 'complex'.*int64"):
        micronet.audit(Tiny(), (1, 3, 8, 8), input_dtype="complex")


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, y):
        return self.fc(x) + y


def test_a_forward_needing_two_inputs_is_a_usage_error():
    with pytest.raises(UsageError, match=r"TwoInputs.forward needs 2 inputs \(x, y\).*wrap"):
        micronet.audit(TwoInputs(), (2, 4))
