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


def test_imta_2021_refuses_export_captures(tmp_path):
    exported = torch.export.export(Quirks().eval(), (torch.zeros(1, 3, 8, 8),))
    torch.export.save(exported, tmp_path / "q.pt2")
    with pytest.raises(micronet.UsageError, match="torch.export"):
        micronet.audit(str(tmp_path / "q.pt2"), track="cifar10", rulebook="imta-2021")
