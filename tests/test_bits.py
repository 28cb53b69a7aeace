"""micronet.bits: the one way a plugin declares bit widths and extra storage."""
import copy

import pytest
import torch
from torch import nn

import micronet
from micronet.bits import bits_of, declare_storage, set_bits, storage_of
from micronet.errors import UsageError
from micronet.pipeline import compress


def tiny() -> nn.Sequential:
    """A 4->3 linear layer (12 weights, 3 biases) after a flatten."""
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_declared_storage_is_charged_at_its_own_width():
    plain = micronet.audit(tiny(), (1, 4), freebie=False)
    model = tiny()
    declare_storage(model[1], "codebook", elements=16, bits=32)  # 16 float32 centroids
    declare_storage(model[1], "indices_scale", elements=2, bits=16)
    charged = micronet.audit(model, (1, 4), freebie=False)
    # 16 * 32 / 32 + 2 * 16 / 32 = 17 more 32-bit equivalents; ops unchanged
    assert charged.score.storage - plain.score.storage == 16 + 1 == 17
    assert charged.score.ops == plain.score.ops
    layer = next(r for r in charged.records if r.name == "1")
    assert layer.declared_storage_bits == 16 * 32 + 2 * 16
    with_freebie = micronet.audit(model, (1, 4), freebie=True)  # declared storage is not a parameter
    assert with_freebie.score.storage == pytest.approx(15 * 16 / 32 + 17)


def test_user_overrides_beat_declared_widths_which_beat_dtypes():
    model = tiny()
    set_bits(model[1], weight=4, input=8)
    declared = next(r for r in micronet.audit(model, (1, 4)).records if r.name == "1")
    assert (declared.weight_bits, declared.input_bits) == (4, 8)
    asked = next(r for r in micronet.audit(model, (1, 4), bits={"1": 6}).records if r.name == "1")
    assert (asked.weight_bits, asked.input_bits) == (6, 8)


def test_declarations_survive_copies_and_are_validated():
    model = tiny()
    set_bits(model[1], weight=4)
    set_bits(model[1], accumulator=16)  # None leaves the weight as it was
    declare_storage(model[1], "codebook", elements=16, bits=32)
    copied = copy.deepcopy(model)
    assert bits_of(copied[1]) == {"weight": 4, "accumulator": 16}
    assert storage_of(copied[1]) == {"codebook": (16, 32)}
    assert "micronet_bits" not in dict(copied[1].named_buffers())  # not a tensor, not in the state dict
    assert list(copied.state_dict()) == ["1.weight", "1.bias"]
    for bad in (0, 65, 4.0, True):
        with pytest.raises(UsageError):
            set_bits(model[1], weight=bad)
    with pytest.raises(UsageError, match="elements"):
        declare_storage(model[1], "x", elements=-1, bits=8)


def test_declarations_survive_the_pipelines_model_pt2(tmp_path):
    from micronet import hookimpl
    from micronet.manager import Registries, get_plugin_manager
    from micronet.steps import CompressionStep

    def cluster(model, options, context):
        set_bits(model.get_submodule("1"), weight=4)
        declare_storage(model.get_submodule("1"), "codebook", elements=16, bits=32)
        return model

    class Clustering:
        @hookimpl
        def micronet_register_steps(self):
            return [CompressionStep("cluster", "4-bit indices into a 16-entry codebook", cluster)]

    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Clustering()]))
    history = compress({"model": {"spec": "x", "input": [1, 4]}, "score": {"freebie": False},
                        "step": [{"use": "cluster"}]}, model=tiny(), registries=registries, out=tmp_path / "o")
    # 15 params at 4 bits = 1.875, the codebook 16 float32 = 16
    assert history.final.score.storage == pytest.approx(15 * 4 / 32 + 16)
    archived = micronet.audit(str(tmp_path / "o" / "model.pt2"), freebie=False)
    assert archived.score.storage == pytest.approx(history.final.score.storage)


# ----------------------------------------------------------- declarations the values must honour


def _distinct_per_row(tensor):
    return max(len(torch.unique(row)) for row in tensor.detach().reshape(tensor.shape[0], -1))


def test_bits_violation_counts_distinct_values_per_output_channel():
    from micronet.bits import bits_violation

    layer = nn.Linear(20, 3)
    with torch.no_grad():  # row 0: 4 values, rows 1-2: 5 values; the bias 3 values
        layer.weight.copy_(torch.tensor([[0.0, 1.0, 2.0, 3.0] * 5, [0.0, 1.0, 2.0, 3.0, 4.0] * 4,
                                         [4.0, 1.0, 2.0, 3.0, 0.0] * 4]))
        layer.bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    model = nn.Sequential(layer)
    assert bits_violation(model) is None  # nothing declared
    set_bits(layer, weight=3)  # 8 values per channel: fine
    assert bits_violation(model) is None
    set_bits(layer, weight=2)  # 4 values: rows 1 and 2 hold 5
    assert bits_violation(model) == ("'0.weight' declares 2-bit weights and holds 5 distinct values in output "
                                     "channel 1 (at most 4 fit in 2 bits)")
    set_bits(layer, weight=1)  # 2 values: every row holds more; the worst is named
    assert bits_violation(model).endswith("holds 5 distinct values in output channel 1 (at most 2 fit in 1 bit)")
    set_bits(layer, weight=32)
    assert bits_violation(model) is None


def test_a_step_leaving_a_quantized_layer_off_its_grid_fails_and_keeps_the_input():
    from micronet.manager import Registries, get_plugin_manager, hookimpl
    from micronet.steps import CompressionStep

    def drift(model, options, context):  # a plugin training without the quantizer
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 1e-3)
        return model

    class Steps:
        @hookimpl
        def micronet_register_steps(self):
            return [CompressionStep("drift", "move every weight a little", drift)]

    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Steps()]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    recipe = {"model": {"spec": "unused", "input": [1, 3, 8, 8]},
              "step": [{"use": "quantize", "weight_bits": 4}, {"use": "drift"}]}
    with pytest.raises(micronet.CompressionError) as raised:
        compress(recipe, model=model, registries=registries)
    assert "step 2 ('drift'" in str(raised.value)
    assert "'0.weight' declares 4-bit weights and holds" in str(raised.value)
    assert "(at most 16 fit in 4 bits)" in str(raised.value)


def test_finetune_keeps_quantized_layers_on_their_grids():
    # quantize to 4 bits, then fine-tune: the weights train through the grid and end on it
    from conftest import trained_digits_cnn

    recipe = {"model": {"spec": "micronet:digits_cnn"}, "score": {"track": "digits"},
              "data": {"dataset": "digits", "batch_size": 64},
              "step": [{"use": "quantize", "weight_bits": 4, "activation_bits": 32, "layers": ["conv2", "fc"]},
                       {"use": "finetune", "epochs": 1, "lr": 0.01, "max_batches": 4}]}
    history = compress(recipe, model=trained_digits_cnn())
    quantized, tuned = history.steps[0].result, history.steps[1].result
    assert history.steps[1].notes["kept_on_grids"] == 3  # conv2.weight (no bias), fc.weight, fc.bias
    assert tuned.score.total == pytest.approx(quantized.score.total)  # the same bits, still honoured
    model = history.model
    assert _distinct_per_row(model.conv2.weight) <= 15  # symmetric 4-bit grid: 2^4 - 1 values
    assert _distinct_per_row(model.fc.weight) <= 15
    assert _distinct_per_row(model.conv3.weight) > 16  # float layers train freely
    before = dict(trained_digits_cnn().named_parameters())
    assert not torch.equal(model.fc.weight, before["fc.weight"])  # it did learn
