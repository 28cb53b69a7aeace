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
