"""The factorise step: grouped, depthwise-separable and low-rank layers, scored by hand."""
import pytest
import torch
import torchvision
from torch import nn

from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.plugins.factorise import depthwise_separable, energy_rank, factorise, low_rank, thin_svd
from micronet.steps import StepContext

import weighted_layer


class ConvNet(nn.Module):
    """conv(cin -> cout, k, stride, pad k//2) -> ReLU -> global pool -> linear(cout -> 10)."""

    def __init__(self, cin=8, cout=8, k=3, stride=1, groups=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cout, 10)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class Mlp(nn.Module):
    """linear(16 -> 12) -> ReLU -> linear(12 -> 5): the low-rank fixture."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 12)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(x)))


class Attention(nn.Module):
    """Self-attention then a linear head: MultiheadAttention's out_proj is a
    Linear the graph never calls (the attention reads its weight)."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.attn(x, x, x, need_weights=False)[0])


def recipe(*steps, shape=(1, 8, 8, 8), track="cifar100"):
    return {"model": {"spec": "unused", "input": list(shape)},
            "score": {"track": track, "freebie": False},
            "step": [dict(step) for step in steps]}


def cost(result, name):
    return next(c for record, c in result.layers if record.name == name)


def run(model, shape, **options):
    return compress(recipe({"use": "factorise", **options}, shape=shape), model=model,
                    registries=pytest.registries)


@pytest.fixture(autouse=True)
def _registries(registries):
    pytest.registries = registries
    yield
    del pytest.registries


# ---------------------------------------------------------------- groups


def test_groups_halve_the_conv_and_keep_the_block_diagonal():
    model = ConvNet(8, 8)
    history = run(model, (1, 8, 8, 8), method="groups", groups=2)
    new = history.model.conv
    assert new.groups == 2 and new.weight.shape == (8, 4, 3, 3)
    w = model.conv.weight
    assert torch.equal(new.weight[:4], w[:4, :4]) and torch.equal(new.weight[4:], w[4:, 4:])
    assert torch.equal(new.bias, model.conv.bias)
    before, after = cost(history.input, "conv"), cost(history.final, "conv")
    e = 8 * 8 * 8  # output elements
    assert before.storage == 8 * 8 * 9 + 8 and after.storage == 8 * 4 * 9 + 8
    assert (before.mults, after.mults) == (e * 72, e * 36)  # L = 9*8, then 9*8/2
    assert (before.adds, after.adds) == (e * 71 + e, e * 35 + e)  # bias adds stay
    assert history.input.score.ops - history.final.score.ops == 2 * e * 36
    assert history.steps[0].name == "factorise"
    assert history.steps[0].notes["replaced"] == {"conv": {"params": [584, 296], "groups": 2}}
    assert history.model(torch.randn(1, 8, 8, 8)).shape == (1, 10)


def test_groups_that_do_not_divide_the_channels_leave_the_layer_unchanged():
    model = ConvNet(8, 8)
    with pytest.warns(UserWarning) as caught:
        history = run(model, (1, 8, 8, 8), method="groups", groups=3)
    assert [str(w.message) for w in caught] == [
        "factorise: 1 layer(s) cannot be factorised by 'groups' and are left unchanged: conv: in_channels 8 "
        "and out_channels 8 are not both divisible by groups 3",
        "factorise: no layer was changed by 'groups'"]
    assert history.model.conv.groups == 1 and torch.equal(history.model.conv.weight, model.conv.weight)
    assert history.final.score.total == history.input.score.total
    assert "not both divisible" in history.steps[0].notes["unchanged"]["conv"]


def test_an_already_grouped_conv_is_left_unchanged():
    with pytest.warns(UserWarning) as caught:
        history = run(ConvNet(8, 8, groups=2), (1, 8, 8, 8), method="groups", groups=2)
    assert "conv: already grouped (groups=2)" in str(caught[0].message)
    assert history.model.conv.groups == 2


# --------------------------------------------------- depthwise-separable


def rank_one_per_input_channel(conv):
    """W[o, c] = a[o, c] * K[c]: each input channel's kernels are multiples of one."""
    cout, cin, kh, kw = conv.weight.shape
    with torch.no_grad():
        conv.weight.copy_(torch.randn(cout, cin, 1, 1) * torch.randn(1, cin, kh, kw))


def test_depthwise_separable_is_exact_when_each_input_channel_is_rank_one():
    model = ConvNet(4, 6, k=3, stride=2)
    rank_one_per_input_channel(model.conv)
    history = run(model, (1, 4, 8, 8), method="depthwise-separable")
    depthwise, pointwise = history.model.conv
    assert (depthwise.groups, depthwise.stride, depthwise.weight.shape) == (4, (2, 2), (4, 1, 3, 3))
    assert pointwise.weight.shape == (6, 4, 1, 1) and torch.equal(pointwise.bias, model.conv.bias)
    x = torch.randn(2, 4, 8, 8)
    torch.testing.assert_close(history.model.conv(x), model.conv(x), atol=1e-5, rtol=1e-5)
    assert history.steps[0].notes["replaced"]["conv"]["energy"] == pytest.approx(1.0)
    # 6 x 4 x 4 = 96 outputs; the depthwise conv makes 4 x 4 x 4 = 64
    assert cost(history.input, "conv").mults == 96 * 36
    assert (cost(history.final, "conv.0").mults, cost(history.final, "conv.0").adds) == (64 * 9, 64 * 8)
    assert (cost(history.final, "conv.1").mults, cost(history.final, "conv.1").adds) == (96 * 4, 96 * 3 + 96)
    assert history.input.score.storage - history.final.score.storage == 216 - (36 + 24)
    assert history.model(x).shape == (2, 10)


def test_depthwise_separable_is_the_closest_rank_one_per_channel():
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=False)
    pair, kept = depthwise_separable(conv)
    w = conv.weight.detach()
    rebuilt = (pair[1].weight[:, :, 0, 0, None, None] * pair[0].weight[:, 0][None]).detach()  # P[o, c] D[c]
    residual = float(((w - rebuilt) ** 2).sum() / (w ** 2).sum())
    assert kept == pytest.approx(1 - residual, abs=1e-5)
    for c in range(3):  # the residual of channel c is all but its top singular value
        s = torch.linalg.svdvals(w[:, c].reshape(5, 9).double())
        assert float(((w[:, c] - rebuilt[:, c]) ** 2).sum()) == pytest.approx(float((s[1:] ** 2).sum()), rel=1e-4)


def test_a_1x1_conv_cannot_be_separated():
    with pytest.warns(UserWarning) as caught:
        history = run(ConvNet(8, 8, k=1), (1, 8, 8, 8), method="depthwise-separable")
    assert "conv: kernel is 1x1: nothing to separate" in str(caught[0].message)
    assert history.steps[0].notes["warnings"][-1] == "no layer was changed by 'depthwise-separable'"
    assert isinstance(history.model.conv, nn.Conv2d)


# -------------------------------------------------------------- low-rank


def test_low_rank_at_full_rank_gives_the_same_outputs():
    model = Mlp()
    history = run(model, (1, 16), method="low-rank", rank=12, layers=["fc1"])
    first, second = history.model.fc1
    assert first.weight.shape == (12, 16) and first.bias is None
    assert second.weight.shape == (12, 12) and torch.equal(second.bias, model.fc1.bias)
    x = torch.randn(3, 16)
    torch.testing.assert_close(history.model(x), model(x), atol=1e-5, rtol=0)
    assert history.steps[0].notes["larger"] == ["fc1"]  # 12*(16+12) + 12 > 16*12 + 12


@pytest.mark.parametrize("k", [1, 3])
def test_low_rank_convs_at_full_rank_give_the_same_outputs(k):
    model = ConvNet(8, 6, k=k, stride=2)
    history = run(model, (1, 8, 8, 8), method="low-rank", rank=6, layers=["conv"])
    first, second = history.model.conv
    assert first.weight.shape == (6, 8, k, k) and first.stride == (2, 2) and second.kernel_size == (1, 1)
    x = torch.randn(2, 8, 8, 8)
    torch.testing.assert_close(history.model(x), model(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(6, 20), (20, 6)])
def test_thin_svd_of_wide_and_tall_matrices(shape):
    matrix = torch.randn(*shape, dtype=torch.float64)
    u, s, vh = thin_svd(matrix)
    assert u.shape == (shape[0], 6) and vh.shape == (6, shape[1])
    torch.testing.assert_close(u * s @ vh, matrix)
    torch.testing.assert_close(s, torch.linalg.svdvals(matrix))
    torch.testing.assert_close(u.T @ u, torch.eye(6, dtype=torch.float64))


def singular_values(layer, values):
    """Give ``layer`` a weight with exactly these singular values."""
    out, inp = layer.weight.shape
    u, _ = torch.linalg.qr(torch.randn(out, out))
    v, _ = torch.linalg.qr(torch.randn(inp, out))
    with torch.no_grad():
        layer.weight.copy_(u @ torch.diag(torch.tensor(values)) @ v.T)


@pytest.mark.parametrize("energy, rank", [(0.5, 1), (0.8, 2), (25 / 30, 2), (0.9, 3), (1.0, 4)])
def test_energy_picks_the_smallest_rank_that_reaches_it(energy, rank):
    # s = 4, 3, 2, 1, 0...: energy 16/30, 25/30, 29/30, 1
    model = Mlp()
    singular_values(model.fc1, [4.0, 3.0, 2.0, 1.0] + [0.0] * 8)
    history = run(model, (1, 16), method="low-rank", energy=energy, layers=["fc1"])
    assert history.model.fc1[0].weight.shape == (rank, 16)
    assert history.steps[0].notes["replaced"]["fc1"]["rank"] == rank
    assert energy_rank(torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0]), energy) == rank


def test_low_rank_charges_the_two_new_layers():
    model = Mlp()
    singular_values(model.fc1, [4.0, 3.0, 2.0, 1.0] + [0.0] * 8)
    history = run(model, (1, 16), method="low-rank", rank=2, layers=["fc1"])
    before, first, second = cost(history.input, "fc1"), cost(history.final, "fc1.0"), cost(history.final, "fc1.1")
    assert (before.storage, before.mults, before.adds) == (16 * 12 + 12, 16 * 12, 15 * 12 + 12)
    assert (first.storage, first.mults, first.adds) == (16 * 2, 16 * 2, 15 * 2)  # no bias
    assert (second.storage, second.mults, second.adds) == (2 * 12 + 12, 2 * 12, 1 * 12 + 12)
    saved = before.storage - first.storage - second.storage
    assert history.input.score.storage - history.final.score.storage == pytest.approx(saved)
    x = torch.randn(3, 16)  # rank 2 of a rank-4 weight: not the same function
    assert not torch.allclose(history.model(x), model(x), atol=1e-3)
    assert history.model(x).shape == (3, 5)


def test_a_rank_above_the_layer_size_is_refused():
    with pytest.warns(UserWarning, match=r"fc2: rank 8 is larger than min\(out, in\*kernel\) = "
                                         r"min\(5, 12\) = 5"):
        history = run(Mlp(), (1, 16), method="low-rank", rank=8)
    assert list(history.steps[0].notes["replaced"]) == ["fc1"]
    assert isinstance(history.model.fc2, nn.Linear)


def test_layers_called_only_through_their_weight_are_never_replaced():
    history = run(Attention(), (1, 5, 16), method="low-rank", rank=2)
    assert list(history.steps[0].notes["replaced"]) == ["head"]
    assert type(history.model.attn.out_proj).__name__ == "NonDynamicallyQuantizableLinear"
    assert not history.final.uncounted


# ---------------------------------------------------- selection, options


def test_globs_min_size_and_a_glob_matching_nothing():
    with pytest.warns(UserWarning, match=r"layers glob 'encoder\.\*' matches no Conv2d or Linear layer"):
        history = run(Mlp(), (1, 16), method="low-rank", rank=2, layers=["fc*", "encoder.*"], min_size=100)
    notes = history.steps[0].notes
    assert list(notes["replaced"]) == ["fc1"] and notes["skipped_small"] == ["fc2"]  # 12*5 + 5 < 100


def test_the_step_runs_on_a_plain_module_too():
    context = StepContext((1, 16), None)
    model = factorise(Mlp(), {"method": "low-rank", "rank": 3, "energy": 0.0, "groups": 0, "layers": [],
                              "ignore": ["fc2"], "min_size": 0}, context)
    assert isinstance(model.fc1, nn.Sequential) and isinstance(model.fc2, nn.Linear)
    assert low_rank(nn.Linear(4, 3), 2)[0].weight.shape == (2, 4)



LOW_RANK = {"method": "low-rank", "rank": 2, "energy": 0.0, "groups": 0, "layers": [], "ignore": [],
            "min_size": 0}


def test_a_declared_weighted_layer_is_selected_and_left_unchanged_with_its_reason():
    context = StepContext((1, 6), None, registries=weighted_layer.registries())
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), weighted_layer.Mix(8, 4))
    with pytest.warns(UserWarning) as caught:
        model = factorise(model, LOW_RANK, context)
    reason = "Mix is a weighted layer a plugin declared (weighted_layer.Mix); factorise replaces only " \
             "Conv2d and Linear"
    assert [str(w.message) for w in caught] == [
        f"factorise: 1 layer(s) cannot be factorised by 'low-rank' and are left unchanged: 2: {reason}"]
    assert context.notes["unchanged"] == {"2": reason} and list(context.notes["replaced"]) == ["0"]
    assert isinstance(model[0], nn.Sequential) and isinstance(model[2], weighted_layer.Mix)


def test_globs_name_the_declared_layers_among_the_candidates():
    context = StepContext((1, 6), None, registries=weighted_layer.registries())
    with pytest.warns(UserWarning) as caught:
        factorise(nn.Sequential(nn.Linear(6, 8)), {**LOW_RANK, "ignore": ["0", "head"]}, context)
    assert [str(w.message) for w in caught] == [
        "factorise: ignore glob 'head' matches no Conv2d or Linear or Mix layer called by the model",
        "factorise: no Conv2d or Linear or Mix layer called by the model is selected (layers [], "
        "ignore ['0', 'head'])",
        "factorise: no layer was changed by 'low-rank'"]

@pytest.mark.parametrize("options, message", [
    ({"method": "svd"}, r"option 'method' must be one of 'groups', 'depthwise-separable', 'low-rank'"),
    ({"method": "low-rank", "energy": 1.5}, r"option 'energy': expected 0 < energy <= 1"),
    ({"method": "low-rank", "rank": -1}, r"option 'rank': expected an integer >= 0"),
])
def test_bad_options_fail_before_any_work(options, message):
    with pytest.raises(UsageError, match=message):
        run(Mlp(), (1, 16), **options)


@pytest.mark.parametrize("options, message", [
    ({"method": "low-rank"}, "needs exactly one of rank or energy"),
    ({"method": "low-rank", "rank": 2, "energy": 0.9}, "needs exactly one of rank or energy"),
    ({"method": "groups"}, "needs groups >= 2, got 0"),
    ({"method": "groups", "groups": 2, "rank": 3}, r"option\(s\) rank do not apply to method 'groups'"),
])
def test_inconsistent_options_fail_before_any_work_with_the_reason(options, message):
    with pytest.raises(UsageError, match=rf"step 1 \(factorise\): factorise: .*{message}"):
        run(Mlp(), (1, 16), **options)


# ------------------------------------------------------------------ zoo


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:factorise. 2 layer.s. cannot be factorised:UserWarning")  # the 1x1 downsamples
@pytest.mark.parametrize("options", [
    {"method": "groups", "groups": 2, "layers": ["layer*"]},
    {"method": "depthwise-separable", "layers": ["layer3.*", "layer4.*"]},
    {"method": "low-rank", "energy": 0.5, "layers": ["fc", "*.downsample.0"]},
], ids=lambda options: options["method"])
def test_zoo_smoke_resnet18(options):
    model = torchvision.models.resnet18(weights=None)
    history = compress(recipe({"use": "factorise", **options}, shape=(1, 3, 64, 64), track="imagenet"),
                       model=model, registries=pytest.registries)
    final = history.final
    assert not final.uncounted
    assert final.score.total < history.input.score.total
    assert final.totals["params"] < history.input.totals["params"]
    assert history.steps[0].notes["replaced"]
    with torch.no_grad():
        assert history.model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_option_combinations_fail_before_any_work(monkeypatch):
    from micronet.manager import Registries, get_plugin_manager
    from micronet.pipeline import compress

    def no_work(*args, **kwargs):
        raise AssertionError("audited before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    registries = Registries.from_manager(get_plugin_manager(entry_points=False))
    recipe = {"model": {"spec": "unused"}, "step": [{"use": "factorise", "method": "low-rank"}]}
    with pytest.raises(UsageError, match="step 1 \\(factorise\\): .*exactly one of rank or energy"):
        compress(recipe, model=nn.Linear(4, 4), registries=registries)
