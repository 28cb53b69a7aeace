"""The course rulebooks: the reference constants come out of the rulebook itself."""
import pytest
import torch
from torch import nn

import micronet
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
