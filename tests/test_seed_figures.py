"""The published final figures of two IMT Atlantique course teams reproduce.

Closed-form checks of the course's scoring (rulebook ``imta-2021-pruned``,
track ``cifar10``) on the teams' architectures, built and compressed here the
way the teams did it, without training: under the course profiler the score
depends on which weights are pruned only through their fraction, and on the
layers' bits. Every expected count is hand arithmetic from the architecture
(``micronet.models.densenet_cifar``: growth 4, blocks 6/12/24/16, reduction
0.5, 10 classes).

The course profiler (RULES.md section 2), per output element of a Conv2d:
``(k*k*cin/qf + k*k*cin - 1) / groups``; BatchNorm2d: 3 per input element;
Linear: ``in/qf + in - 1``; functional ReLU / pooling / cat: 0; params: all
of a layer's parameters / qf; qf = 2 for float (16-bit default), 4 at 8 bits.
Score = ops / 834,362,880 + params / 5,586,981 * (1 - sparsity).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

import micronet
from micronet.models import densenet_cifar
from micronet.pipeline import compress

REFERENCE_OPS, REFERENCE_PARAMS = 834_362_880, 5_586_981
INT8_LAYERS = ["trans2*", "dense3*", "trans3*", "dense4*"]


def global_magnitude_prune(model: nn.Module, amount: float, rounds: int = 1) -> int:
    """The course's pruning: ``torch.nn.utils.prune.global_unstructured`` (L1)
    over every Conv2d / Linear weight, ``rounds`` times ``amount`` of what is
    left, made permanent. Returns the number of zeros."""
    weights = [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for _ in range(rounds):
        torch_prune.global_unstructured(weights, pruning_method=torch_prune.L1Unstructured, amount=amount)
    for module, name in weights:
        torch_prune.remove(module, name)
    return sum(int((m.weight == 0).sum()) for m, _ in weights)


# ------------------------------------------------------------------ the growth-4 DenseNet team

# densenet_cifar(growth_rate=4, groups=2). A bottleneck reading c channels at P positions,
# weights at qf: bn1 3cP; conv1 1x1 c -> 16, groups 2: 16P * (c/qf + c - 1) / 2; bn2 3*16*P;
# conv2 3x3 16 -> 4, groups 2: 4P * (144/qf + 143) / 2.
#   qf 2 (float): 3cP + 12cP - 8P + 48P + 430P = 15cP + 470P
#   qf 4 (int8):  3cP + 10cP - 8P + 48P + 358P = 13cP + 398P
GROWTH4_OPS = (
    8 * 1024 * 79 // 2                    # stem conv 3 -> 8 at 32x32, 27/2 + 26 per output: 323,584
    + (15 * 108 + 470 * 6) * 1024         # dense1, c = 8..28 (sum 108), float: 4,546,560
    + 3 * 32 * 1024 + 16 * 1024 * 47      # trans1 bn + conv 32 -> 16 (16 + 31 per output): 868,352
    + (15 * 456 + 470 * 12) * 256         # dense2, c = 16..60 (sum 456), float: 3,194,880
    + 3 * 64 * 256 + 32 * 256 * (16 + 63)  # trans2 at int8: bn 49,152 + conv 647,168
    + (13 * 1872 + 398 * 24) * 64         # dense3, c = 32..124 (sum 1,872), int8: 2,168,832
    + 3 * 128 * 64 + 64 * 64 * (32 + 127)  # trans3 at int8: bn 24,576 + conv 651,264
    + (13 * 1504 + 398 * 16) * 16         # dense4, c = 64..124 (sum 1,504), int8: 414,720
    + 3 * 128 * 16 + 10 * (64 + 127)      # final bn 6,144 + linear 1,910
)
# parameters by part (see tests/test_models.py): stem 216, dense1 3,000, trans1 576, dense2 8,400,
# final bn 256 and fc 1,290 stay float (/2); trans2 2,176, dense3 26,400, trans3 8,448 and
# dense4 20,160 are int8, BatchNorms included (/4)
GROWTH4_PARAMS = (216 + 3_000 + 576 + 8_400 + 256 + 1_290) // 2 + (2_176 + 26_400 + 8_448 + 20_160) // 4
# the pruned weights: every Conv2d / Linear weight, 70,922 params less 10,440 of BatchNorm and 10 of bias
GROWTH4_WEIGHTS = 70_922 - 10_440 - 10


def test_growth4_hand_counts():
    assert GROWTH4_OPS == 12_897_142
    assert GROWTH4_PARAMS == 6_869 + 14_296 == 21_165
    assert GROWTH4_WEIGHTS == 60_472
    # ten rounds of 10% of what is left, each rounded: torch.nn.utils.prune's count
    zeros = 0
    for _ in range(10):
        zeros += round(0.1 * (GROWTH4_WEIGHTS - zeros))
    assert zeros == 39_386  # 65.13% (1 - 0.9 ** 10 = 65.132%)


@pytest.fixture(scope="module")
def growth4_pruned():
    """The team's DenseNet, globally magnitude-pruned in ten rounds of 10%
    (once per module: neither the pipeline nor the audit changes it)."""
    torch.manual_seed(0)
    model = densenet_cifar(growth_rate=4, groups=2)
    assert global_magnitude_prune(model, 0.1, rounds=10) == 39_386
    return model


def test_growth4_densenet_team_score_with_the_quantize_step(growth4_pruned, registries):
    """int8 on trans2, dense3, trans3 and dense4 with their BatchNorms, as the
    recipe does it: the ``quantize`` step (weights only; activations float)."""
    recipe = {
        "model": {"spec": "micronet:densenet_cifar?growth_rate=4&groups=2", "input": [1, 3, 32, 32]},
        "score": {"track": "cifar10", "rulebook": "imta-2021-pruned"},
        "step": [{"use": "quantize", "weight_bits": 8, "activation_bits": 32, "batchnorm": True,
                  "layers": INT8_LAYERS}],
    }
    history = compress(recipe, model=growth4_pruned, registries=registries)
    final = history.final
    assert final.uncounted == ()
    assert final.totals["exact_ops"] == str(GROWTH4_OPS)
    assert final.totals["exact_params"] == str(GROWTH4_PARAMS)
    # int8 keeps every zero and makes none: the pruned fraction is the ten rounds'
    assert (final.totals["pruned_weight_zeros"], final.totals["pruned_weights"]) == (39_386, 60_472)
    score = GROWTH4_OPS / REFERENCE_OPS + GROWTH4_PARAMS / REFERENCE_PARAMS * (1 - 39_386 / 60_472)
    assert final.score.total == pytest.approx(score, rel=1e-12)
    assert round(final.score.total, 5) == 0.01678  # the team's published figure


def test_growth4_densenet_team_score_with_bit_overrides(growth4_pruned):
    """The same figure from the audit's bit overrides (globs cover the BatchNorms)."""
    bits = {glob: 8 for glob in INT8_LAYERS}
    result = micronet.audit(growth4_pruned, (1, 3, 32, 32), track="cifar10", rulebook="imta-2021-pruned",
                            bits=bits)
    assert result.totals["exact_ops"] == str(GROWTH4_OPS)
    assert result.totals["exact_params"] == str(GROWTH4_PARAMS)
    assert round(result.score.total, 5) == 0.01678


# ------------------------------------------------------------------ Group 9

# densenet_cifar(growth_rate=4), all float (qf 2). A bottleneck reading c channels at P
# positions: bn1 3cP; conv1 16P * (c/2 + c - 1); bn2 48P; conv2 4P * (72 + 143): 27cP + 892P.
GROUP9_OPS = (
    8 * 1024 * 79 // 2                    # stem: 323,584
    + (27 * 108 + 892 * 6) * 1024         # dense1: 8,466,432
    + 3 * 32 * 1024 + 16 * 1024 * 47      # trans1: 98,304 + 770,048
    + (27 * 456 + 892 * 12) * 256         # dense2: 5,892,096
    + 3 * 64 * 256 + 32 * 256 * 95        # trans2: 49,152 + 778,240
    + (27 * 1872 + 892 * 24) * 64         # dense3: 4,604,928
    + 3 * 128 * 64 + 64 * 64 * 191        # trans3: 24,576 + 782,336
    + (27 * 1504 + 892 * 16) * 16         # dense4: 878,080
    + 3 * 128 * 16 + 10 * 191             # final bn 6,144 + linear 1,910
)
GROUP9_PARAMS = 119_146 // 2  # every parameter at 16 bits (tests/test_models.py: 119,146)
# Conv2d / Linear weights: 119,146 less 10,440 of BatchNorm (5,220 channels) and 10 of bias
GROUP9_WEIGHTS = 119_146 - 10_440 - 10


@pytest.fixture
def group9_model():
    """Group 9's DenseNet, 19.7% globally pruned, in half precision."""
    model = densenet_cifar(growth_rate=4)
    assert global_magnitude_prune(model, 0.197) == round(0.197 * GROUP9_WEIGHTS) == 21_413
    return model.half()


def test_group9_score(group9_model):
    assert GROUP9_OPS == 22_675_830 and GROUP9_PARAMS == 59_573 and GROUP9_WEIGHTS == 108_696
    result = micronet.audit(group9_model, (1, 3, 32, 32), track="cifar10", rulebook="imta-2021-pruned")
    assert result.uncounted == ()
    assert result.totals["exact_ops"] == str(GROUP9_OPS)
    assert result.totals["exact_params"] == str(GROUP9_PARAMS)
    score = GROUP9_OPS / REFERENCE_OPS + GROUP9_PARAMS / REFERENCE_PARAMS * (1 - 21_413 / GROUP9_WEIGHTS)
    assert result.score.total == pytest.approx(score, rel=1e-12)
    assert round(result.score.total, 4) == 0.0357  # the group's published figure


def test_group9_under_plain_imta_2021(group9_model):
    """Why ``-pruned`` is the course's setting. Plain ``imta-2021`` takes the
    zero fraction over *all* counted parameters, BatchNorm included. On this
    untrained model the 5,220 BatchNorm biases are still at their initial
    zeros and count as pruned: 0.0355. Trained, they are not zeros, and the
    same reading gives 0.0359. The course profiler was handed the pruned
    weights' fraction, which does not move with BatchNorm's values: 0.0357,
    the published figure, either way."""
    plain = micronet.audit(group9_model, (1, 3, 32, 32), track="cifar10", rulebook="imta-2021")
    assert plain.totals["unstructured_sparsity"] == (21_413 + 5_220) / 119_146
    assert round(plain.score.total, 4) == 0.0355
    with torch.no_grad():
        for m in group9_model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.fill_(0.1)  # as after training: no zero among them
    trained = micronet.audit(group9_model, (1, 3, 32, 32), track="cifar10", rulebook="imta-2021")
    assert trained.totals["unstructured_sparsity"] == 21_413 / 119_146
    assert round(trained.score.total, 4) == 0.0359
    pruned = micronet.audit(group9_model, (1, 3, 32, 32), track="cifar10", rulebook="imta-2021-pruned")
    assert round(pruned.score.total, 4) == 0.0357
