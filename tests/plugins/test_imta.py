"""The course rulebooks: the reference constants come out of the rulebook itself; the
per-layer what-ifs equal the fresh audit of the model so changed, and a search under
imta-2021-pruned reaches its budget at the score it predicted."""
from fractions import Fraction

from conftest import trained_digits_cnn
import pytest
import torch
from torch import nn

import micronet
from micronet.bits import bits_of, set_bits
from micronet.pipeline import compress
from micronet.rules import ScoreOptions


@pytest.fixture(scope="module")
def resnet18_2021():
    return micronet.audit("micronet:resnet18_cifar", track="cifar10", rulebook="imta-2021")


def test_reference_constants_are_the_course_resnet18(resnet18_2021):
    totals = resnet18_2021.totals
    # the course printed float32 totals: 834,362,880 ops and 5,586,981 params
    assert totals["float32_ops"] == 834_362_880
    assert totals["float32_params"] == 5_586_981
    assert totals["exact_params"] == "5586981"  # 11,173,962 params / qf 2
    assert totals["exact_ops"] == "834362870"  # the exact count float32 rounded up by 10
    assert resnet18_2021.score.total == pytest.approx(2.0, abs=1e-7)


class Quirks(nn.Module):
    """conv(3->4, k3, groups 1, bias) -> BN -> ReLU module -> AvgPool2d(int 2)
    -> functional relu (uncounted) -> linear(4*4*4 -> 5): 445 parameters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(64, 5)
        nn.init.constant_(self.bn.bias, 0.1)  # no accidental zeros: sparsity is measured

    def forward(self, x):
        x = self.pool(self.relu(self.bn(self.conv(x))))
        return self.fc(torch.relu(x).flatten(1))


def test_each_quirk_in_closed_form():
    r = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021")
    conv = 4 * 8 * 8 * (27 / 2 + 27 - 1 + 1)  # 256 outputs x (k*k*cin/qf + k*k*cin - 1 + bias)
    bn = 3 * 4 * 8 * 8  # 3 per input element
    relu = 4 * 8 * 8  # the module; the functional relu costs nothing
    pool = 2 * 4 * 4 * 4  # int kernel 2: "prod" is 2, not 4 (the original's bug)
    fc = 5 * (64 / 2 + 64 - 1)  # no bias add
    assert r.score.ops == pytest.approx(conv + bn + relu + pool + fc)
    params = (4 * 27 + 4) + (4 + 4) + (64 * 5 + 5)  # BN weight and bias count
    assert r.score.storage == pytest.approx(params / 2)


def test_grouped_conv_divides_the_minus_one_too():
    model = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False))
    r = micronet.audit(model, (1, 8, 4, 4), track="cifar10", rulebook="imta-2021")
    k = 3 * 3 * 8  # the original uses the full cin
    assert r.score.ops == pytest.approx(8 * 16 * (k / 2 + k - 1) / 4)


def test_sparsity_scales_params_only():
    model = Quirks()
    with torch.no_grad():
        model.fc.weight.view(-1)[:160] = 0  # 160 of 445 params zero
    r = micronet.audit(model, (1, 3, 8, 8), track="cifar10", rulebook="imta-2021")
    dense = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021")
    assert r.score.ops == dense.score.ops
    assert r.score.storage_term == pytest.approx(dense.score.storage_term * (1 - 160 / 445))


def test_lab4_closed_form():
    r = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-lab4", bits={"*": 8})
    w = 445
    f = 4 * 64 * 27 + 5 * 64  # conv and linear MACs
    expected = (8 / 32) * w / 5.6e6 + (32 / 32) * f / 2.8e8  # activations stay 32 bits
    assert r.score.total == pytest.approx(expected)
    pruned = r.rescore(ScoreOptions(extra=(("structured", 0.5),), sparsity=0.25))
    assert pruned.score.total == pytest.approx((1 - 0.75) * (8 / 32) * w / 5.6e6 + 0.5 * f / 2.8e8)


def test_fp32_setting_drops_the_factor_2(resnet18_2021):
    # the course's our_quant = 32 gives quant_factor 1: multiplies and params not halved
    r = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021-fp32")
    conv = 4 * 8 * 8 * (27 + 27 - 1 + 1)
    bn, relu, pool = 3 * 4 * 8 * 8, 4 * 8 * 8, 2 * 4 * 4 * 4
    fc = 5 * (64 + 64 - 1)
    assert r.score.ops == pytest.approx(conv + bn + relu + pool + fc)
    assert r.score.storage == pytest.approx(445)
    assert r.score.rulebook == "imta-2021-fp32"
    # the same through ScoreOptions.extra; an int8 layer keeps its qf 4
    assert resnet18_2021.rescore(ScoreOptions(extra=(("quant", 32),))).totals["exact_params"] == "11173962"
    q8 = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021-fp32", bits={"*": 8})
    assert q8.score.ops == pytest.approx(4 * 8 * 8 * (27 / 4 + 27) + bn + relu + pool + 5 * (64 / 4 + 63))


def test_fp32_reference_resnet18(resnet18_2021):
    # 11,173,962 params (not halved): storage term 2; multiplies doubled back
    r = resnet18_2021.rescore(ScoreOptions(extra=(("quant", 32),)))
    macs = resnet18_2021.totals["macs"]
    assert r.score.storage_term == pytest.approx(2.0)
    assert r.score.ops == pytest.approx(834_362_870 + macs / 2)
    assert r.score.total == pytest.approx(2.0 + (834_362_870 + macs / 2) / 834_362_880)


def _pruned_quirks():
    model = Quirks()
    with torch.no_grad():
        model.conv.weight.view(-1)[:54] = 0  # 54 of the conv's 108 weights
        model.fc.weight.view(-1)[:160] = 0  # 160 of the linear's 320
        model.conv.bias.zero_()  # 4 zero biases: counted by "all", not by "pruned"
    return model


def test_sparsity_from_the_pruned_weights():
    dense = micronet.audit(Quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021")
    r = micronet.audit(_pruned_quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021-pruned")
    assert r.totals["unstructured_sparsity"] == pytest.approx((54 + 160) / (108 + 320))  # 0.5
    assert r.score.ops == dense.score.ops
    assert r.score.storage == pytest.approx(445 / 2 * (1 - 0.5))  # still scales every param
    everything = micronet.audit(_pruned_quirks(), (1, 3, 8, 8), track="cifar10", rulebook="imta-2021")
    assert everything.totals["unstructured_sparsity"] == pytest.approx((54 + 160 + 4) / 445)
    both = everything.rescore(ScoreOptions(extra=(("quant", 32), ("sparsity", "pruned"))))
    assert both.score.storage == pytest.approx(445 * 0.5)
    assert micronet.audit(_pruned_quirks(), (1, 3, 8, 8), track="cifar10",
                          rulebook="imta-2021-fp32-pruned").score.total == pytest.approx(both.score.total)
    with pytest.raises(micronet.UsageError, match="quant"):
        everything.rescore(ScoreOptions(extra=(("quant", 8),)))


def test_export_captures_score_as_their_modules(tmp_path):
    model = _pruned_quirks().eval()
    torch.export.save(torch.export.export(model, (torch.zeros(1, 3, 8, 8),)), tmp_path / "q.pt2")
    for book in ("imta-2021", "imta-2021-fp32-pruned"):
        fx = micronet.audit(model, (1, 3, 8, 8), track="cifar10", rulebook=book)
        pt2 = micronet.audit(str(tmp_path / "q.pt2"), track="cifar10", rulebook=book)
        assert pt2.totals["exact_ops"] == fx.totals["exact_ops"]
        assert pt2.totals["exact_params"] == fx.totals["exact_params"]
        assert pt2.score.total == pytest.approx(fx.score.total)


def test_export_grouped_convs_and_reused_relu(tmp_path):
    class Block(nn.Module):  # one ReLU module called twice; grouped 3x3 and 1x1 convs
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
            self.b = nn.Conv2d(8, 4, 1, groups=2)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.b(self.relu(self.a(self.relu(x))))

    torch.export.save(torch.export.export(Block().eval(), (torch.zeros(1, 8, 4, 4),)), tmp_path / "b.pt2")
    r = micronet.audit(str(tmp_path / "b.pt2"), track="cifar10", rulebook="imta-2021")
    a = 8 * 16 * (72 / 2 + 72 - 1) / 4
    b = 4 * 16 * ((8 / 2 + 8 - 1) / 2 + 1)
    assert r.score.ops == pytest.approx(a + b + 2 * 8 * 16)
    assert r.score.ops == pytest.approx(micronet.audit(Block(), (1, 8, 4, 4), track="cifar10",
                                                       rulebook="imta-2021").score.ops)


def test_export_resnet18_cifar_half(tmp_path):
    model = micronet.audit("micronet:resnet18_cifar", track="cifar10", rulebook="imta-2021")
    from micronet.resolve import resolve_model
    module = resolve_model("micronet:resnet18_cifar").model.to_empty(device="cpu").eval().half()
    torch.export.save(torch.export.export(module, (torch.zeros(1, 3, 32, 32, dtype=torch.half),)),
                      tmp_path / "r.pt2")
    r = micronet.audit(str(tmp_path / "r.pt2"), track="cifar10", rulebook="imta-2021")
    assert r.totals["exact_params"] == "5586981"  # fp16 weights: qf 2, as the course's reference
    assert r.totals["exact_ops"] == model.totals["exact_ops"] == "834362870"


# ------------------------------------------------ per-layer ScoreOptions overrides

BOOKS = ("imta-2021", "imta-2021-fp32", "imta-2021-pruned", "imta-2021-fp32-pruned", "imta-lab4")


def _declared_quirks():
    """Quirks with its three layers declared at 8 weight bits (the base the overrides change)."""
    model = Quirks()
    for layer in (model.conv, model.bn, model.fc):
        set_bits(layer, weight=8)
    return model


def _changed_quirks(conv_bits, conv_zeros, fc_bits, fc_zeros):
    """The model the overrides describe: the zeros and the bits really put on the conv and the linear."""
    model = _declared_quirks()
    with torch.no_grad():
        model.conv.weight.view(-1)[:conv_zeros] = 0  # of 108
        model.fc.weight.view(-1)[:fc_zeros] = 0  # of 320
    set_bits(model.conv, weight=conv_bits)
    set_bits(model.fc, weight=fc_bits)
    return model


def _overrides(result, **by_layer):
    """``ScoreOptions`` with per-record overrides: ``conv=(bits, sparsity)`` etc."""
    n = len(result.records)
    bits, sparsity = [None] * n, [None] * n
    for i, record in enumerate(result.records):
        if record.name in by_layer:
            bits[i], sparsity[i] = by_layer[record.name]
    return ScoreOptions(layer_weight_bits=tuple(bits), layer_sparsity=tuple(sparsity))


# (conv bits, conv sparsity, its zeros, fc bits, fc sparsity, its zeros): 0.3 * 108 = 32.4 -> 32 whole zeros
CHANGES = [(4, 0.5, 54, 16, 0.25, 80), (2, 0.3, 32, 32, 0.9, 288), (16, 0.0, 0, 1, 0.75, 240)]


@pytest.mark.parametrize("book", BOOKS)
@pytest.mark.parametrize("change", CHANGES)
def test_overrides_rescore_to_the_fresh_audit_of_the_changed_model(book, change):
    conv_bits, conv_sparsity, conv_zeros, fc_bits, fc_sparsity, fc_zeros = change
    base = micronet.audit(_declared_quirks(), (1, 3, 8, 8), track="cifar10", rulebook=book)
    rescored = base.rescore(_overrides(base, conv=(conv_bits, conv_sparsity), fc=(fc_bits, fc_sparsity)))
    fresh = micronet.audit(_changed_quirks(conv_bits, conv_zeros, fc_bits, fc_zeros), (1, 3, 8, 8),
                           track="cifar10", rulebook=book)
    assert rescored.score.total == fresh.score.total
    assert rescored.score.storage == fresh.score.storage and rescored.score.ops == fresh.score.ops
    for key in ("exact_ops", "exact_params", "unstructured_sparsity", "mults"):
        assert rescored.totals.get(key) == fresh.totals.get(key)


# conv 256 outputs x (27/qf + 27 - 1 + 1), BN 768, ReLU 256, AvgPool 128, fc 5 x (64/qf + 63);
# params: conv 112, BN 8, fc 325 (445), each / its qf; zeros: 54 conv + 80 fc = 134 (of 445; of 428 weights)
HAND = [
    # conv 4 bits (qf 8), BN 8 (qf 4), fc 16 (qf 2): ops 7776 + 768 + 256 + 128 + 475, params 14 + 2 + 162.5
    ("imta-2021", 16, 9403 / 834_362_880 + 178.5 / 5_586_981 * (1 - 134 / 445)),
    ("imta-2021-pruned", 16, 9403 / 834_362_880 + 178.5 / 5_586_981 * (1 - 134 / 428)),
    # fc 32 bits: quant 32 gives it qf 1: fc ops 5 x (64 + 63) = 635, its params 325
    ("imta-2021-fp32", 32, 9563 / 834_362_880 + 341 / 5_586_981 * (1 - 134 / 445)),
    ("imta-2021-fp32-pruned", 32, 9563 / 834_362_880 + 341 / 5_586_981 * (1 - 134 / 428)),
    # under quant 16 the same 32-bit fc is capped at 16: qf 2
    ("imta-2021", 32, 9403 / 834_362_880 + 178.5 / 5_586_981 * (1 - 134 / 445)),
    # qw the widest: 16 (fc), qa 32 (float activations); f = 4*64*27 + 5*64 = 7232 MACs
    ("imta-lab4", 16, (1 - 134 / 445) * (16 / 32) * 445 / 5.6e6 + (32 / 32) * 7232 / 2.8e8),
    ("imta-lab4", 4, (1 - 134 / 445) * (8 / 32) * 445 / 5.6e6 + 7232 / 2.8e8),  # BN's 8 bits widest
]


@pytest.mark.parametrize("book, fc_bits, expected", HAND)
def test_overrides_by_hand(book, fc_bits, expected):
    base = micronet.audit(_declared_quirks(), (1, 3, 8, 8), track="cifar10", rulebook=book)
    rescored = base.rescore(_overrides(base, conv=(4, 0.5), fc=(fc_bits, 0.25)))
    assert rescored.score.total == pytest.approx(expected, rel=1e-12)


def _uniform_half_but_the_conv_weight(book):
    base = micronet.audit(_declared_quirks(), (1, 3, 8, 8), track="cifar10", rulebook=book)
    sparsity = tuple(0.3 if r.name == "conv" else None for r in base.records)
    return base.rescore(ScoreOptions(sparsity=0.5, layer_sparsity=sparsity))


# every counted param at half zeros but the conv weight's 108: round(0.3 * 108) = 32 zeros
UNIFORM_AND_LAYER = (0.5 * (445 - 108) + 32) / 445


def test_a_uniform_sparsity_with_a_layer_override_by_hand():
    rescored = _uniform_half_but_the_conv_weight("imta-2021")
    assert rescored.totals["unstructured_sparsity"] == pytest.approx(UNIFORM_AND_LAYER, rel=1e-12)
    # every layer at 8 bits (qf 4): ops conv 256 x (27/4 + 27), fc 5 x (64/4 + 63); params 445 / 4
    ops = 256 * (27 / 4 + 27) + 768 + 256 + 128 + 5 * (64 / 4 + 63)
    expected = ops / 834_362_880 + 445 / 4 / 5_586_981 * (1 - UNIFORM_AND_LAYER)
    assert rescored.score.total == pytest.approx(expected, rel=1e-12)
    lab4 = _uniform_half_but_the_conv_weight("imta-lab4")  # qw 8, qa 32
    expected = (1 - UNIFORM_AND_LAYER) * (8 / 32) * 445 / 5.6e6 + 7232 / 2.8e8
    assert lab4.score.total == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("book", BOOKS)
def test_storage_overrides_are_ignored_and_every_override_is_checked(book):
    base = micronet.audit(_declared_quirks(), (1, 3, 8, 8), track="cifar10", rulebook=book)
    n = len(base.records)
    declared = base.rescore(ScoreOptions(layer_storage_bits=(1e6,) * n))  # the course counted no scales
    assert declared.score.total == base.score.total
    for field in ("layer_weight_bits", "layer_sparsity", "layer_storage_bits"):
        with pytest.raises(micronet.UsageError, match=f"{field} has {n + 1} entries, expected one per record"):
            base.rescore(ScoreOptions(**{field: (None,) * (n + 1)}))


def test_a_module_called_twice_counts_its_pruned_weight_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(4, 4, 3, padding=1, bias=False)  # 144 weights, called twice
            self.b = nn.Conv2d(4, 4, 3, padding=1, bias=False)  # 144 weights

        def forward(self, x):
            return self.b(self.a(self.a(x)))

    model = Twice()
    with torch.no_grad():
        model.a.weight.view(-1)[:72] = 0
    r = micronet.audit(model, (1, 4, 4, 4), track="cifar10", rulebook="imta-2021-pruned")
    assert r.totals["pruned_weights"] == 288
    assert r.totals["unstructured_sparsity"] == pytest.approx(72 / 288)


def _digits_recipe(book, target):
    return {"model": {"spec": "unused", "input": [1, 1, 8, 8]}, "score": {"track": "digits", "rulebook": book},
            "data": {"dataset": "digits", "batch_size": 64, "calibration_batches": 3},
            "step": [{"use": "search", "target_score": target, "epochs": 0}]}


def test_search_under_imta_2021_pruned_predicts_the_score_it_reaches(tmp_path):
    history = compress(_digits_recipe("imta-2021-pruned", 0.8), model=trained_digits_cnn(), out=tmp_path / "out",
                       log=lambda line: None)
    assert history.failed is None
    # the trained digits CNN at fp16 (qf 2): ops conv1 1024 x (9/2 + 8) + conv2 2048 x (144/2 + 143)
    # + conv3 1024 x (288/2 + 287) + BN 3 x 4096 + ReLU 4096 + fc 10 x (64/2 + 63); params 24,058 / 2
    assert history.results[0].score.total == pytest.approx(911_798 / 1_206_016 + 12_029 / 23_946, rel=1e-12)
    notes = history.steps[0].notes
    assert notes["predicted_score"] <= 0.8
    assert history.final.score.total == pytest.approx(notes["predicted_score"], rel=1e-12)
    # and by hand from the applied model: its declared bits and the zeros of its weights
    modules = dict(history.model.named_modules())
    qf = {name: Fraction(32, min(bits_of(modules[name])["weight"], 16)) for name in ("conv1", "conv2", "conv3", "fc")}
    ops = (1024 * (9 / qf["conv1"] + 8) + 2048 * (144 / qf["conv2"] + 143) + 1024 * (288 / qf["conv3"] + 287)
           + 12_288 + 4096 + 10 * (64 / qf["fc"] + 63))
    params = 144 / qf["conv1"] + 4608 / qf["conv2"] + 18_432 / qf["conv3"] + 650 / qf["fc"] + Fraction(224, 2)
    zeros = sum(int((modules[name].weight == 0).sum()) for name in qf)
    expected = float(ops) / 1_206_016 + float(params) / 23_946 * (1 - zeros / 23_824)
    assert history.final.score.total == pytest.approx(expected, rel=1e-12)
