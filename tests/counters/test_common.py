"""counters/_common.py: aten_ops names exactly the operators it is given."""
import pytest
import torch

from micronet.counters._common import aten_ops

aten = torch.ops.aten


def test_packets_and_overloads_resolve_without_repeats():
    assert aten_ops("view", "split.Tensor", "view") == (aten.view, aten.split.Tensor)


@pytest.mark.parametrize("name", ["veiw", "split.Tensr", "no_such_op.default"])
def test_a_name_torch_does_not_have_is_refused_with_the_name(name):
    with pytest.raises(ValueError, match=rf"no aten operator '{name}'"):
        aten_ops("view", name)
