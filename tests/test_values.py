"""micronet.values: tensors <-> TensorInfo through nested containers (torch's pytree)."""
import collections

import torch
from torch.fx.immutable_collections import immutable_list

from micronet.records import TensorInfo
from micronet.values import has_tensor, shapes, tensor_infos, to_info, to_meta

Pair = collections.namedtuple("Pair", "first second")


def test_to_info_keeps_every_container_and_leaves_sizes_alone():
    value = (torch.zeros(2, 3), [torch.zeros(4, dtype=torch.int64), 5], {"k": torch.zeros(1)},
             Pair(torch.zeros(6), torch.Size([7, 8])), torch.Size([2, 3]))
    info = to_info(value)
    assert info[0] == TensorInfo((2, 3))
    assert info[1] == [TensorInfo((4,), torch.int64), 5]
    assert info[2] == {"k": TensorInfo((1,))}
    assert isinstance(info[3], Pair) and info[3].first == TensorInfo((6,))
    assert type(info[3].second) is torch.Size and type(info[4]) is torch.Size  # a size, not a container


def test_torch_return_types_and_fx_lists_are_walked():
    found = to_info(torch.max(torch.zeros(2, 3), dim=1))
    assert type(found).__name__ == "max" and found.values == TensorInfo((2,))
    assert found.indices == TensorInfo((2,), torch.int64)
    assert type(to_info(immutable_list([torch.zeros(1)]))) is immutable_list


def test_to_meta_makes_empty_tensors_of_the_same_shapes():
    meta = to_meta([TensorInfo((2, 3), torch.float16), {"n": 4}])
    assert meta[0].is_meta and meta[0].shape == (2, 3) and meta[0].dtype == torch.float16
    assert meta[1] == {"n": 4}
    real = to_meta(TensorInfo((2,)), "cpu")
    assert not real.is_meta and real.tolist() == [0.0, 0.0]


def test_shapes_in_argument_order_and_tensor_presence():
    a, b, c = TensorInfo((1,)), TensorInfo((2, 2)), TensorInfo((3,))
    assert shapes((a, [b, 7], {"x": c})) == ((1,), (2, 2), (3,))
    assert tensor_infos(b) == (b,) and tensor_infos(torch.Size([1, 2])) == ()
    assert has_tensor(([1, (2, {"deep": a})],)) and not has_tensor((1, [2, 3], {"k": None}))
