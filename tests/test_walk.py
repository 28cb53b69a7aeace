"""The walker: every call form counted alike, free and uncounted nodes,
shape rules that agree with meta execution, sharing, strict mode."""
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import micronet
from micronet.capture import trace_fx
from micronet.errors import CounterError
from micronet.metaexec import execute
from micronet.records import COUNTED, FREE, UNCOUNTED, TensorInfo
from micronet.walk import WalkSettings, Walker, walk


class ReluForms(nn.Module):
    """Four spellings of ReLU and three of addition, to count identically."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU()

    def forward(self, x):
        a = self.relu(x)
        b = F.relu(x)
        c = torch.relu(x)
        d = x.relu()
        y = a + b
        y = torch.add(y, c)
        y += d
        return y


def records_of(model, shape, registries, **settings):
    model = model.eval()
    cap = trace_fx(model, registries.counters)
    return walk(cap, registries.counters, TensorInfo(shape), WalkSettings(**settings))


def test_every_relu_and_add_form_counts_the_same(registries):
    records = records_of(ReluForms(), (2, 3, 4, 5), registries)
    by_op = {}
    for r in records:
        by_op.setdefault(r.op, []).append(r)
    relus = by_op["relu"]
    assert len(relus) == 4
    assert {r.counts.mults for r in relus} == {2 * 3 * 4 * 5}
    adds = [r for r in records if r.op in ("add", "iadd")]
    assert len(adds) == 3
    assert {r.counts.adds for r in adds} == {2 * 3 * 4 * 5}
    assert all(r.status == COUNTED for r in records)


class SizeReader(nn.Module):
    """Reads x.shape in forward: the size arithmetic is free, never uncounted."""

    def forward(self, x):
        n, c, h, w = x.shape
        y = x.view(n, c * h * w)
        return y.reshape(x.size(0), -1).flatten(1)


def test_size_arithmetic_is_free(registries):
    records = records_of(SizeReader(), (1, 3, 4, 4), registries)
    assert records and all(r.status == FREE for r in records)
    assert records[-1].output_shapes == ((1, 48),)


class Shared(nn.Module):
    """One conv called twice: parameters counted once, ops twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(self.conv(x))


def test_shared_module_params_once_ops_twice(registries):
    records = [r for r in records_of(Shared(), (1, 4, 8, 8), registries) if r.op == "conv2d"]
    assert [r.params for r in records] == [4 * 4 * 9 + 4, 0]
    assert records[0].counts == records[1].counts
    assert records[1].weight_params == 4 * 4 * 9  # sparsity still known for the second call


class Unknown(nn.Module):
    """An op no counter knows (torch.special.i0) must be listed, not zero."""

    def forward(self, x):
        return torch.special.i0(x)


def test_unknown_op_is_uncounted_and_strict_fails(registries):
    records = records_of(Unknown(), (2, 3), registries)
    assert [r.status for r in records] == [UNCOUNTED]
    assert "i0" in records[0].reason
    with pytest.raises(CounterError, match="not counted"):
        records_of(Unknown(), (2, 3), registries, strict=True)


class ParamUser(nn.Module):
    """A bare nn.Parameter used functionally (like ViT's class token)."""

    def __init__(self):
        super().__init__()
        self.token = nn.Parameter(torch.zeros(1, 1, 8))
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(torch.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1))


def test_functional_parameters_are_stored(registries):
    records = records_of(ParamUser(), (2, 5, 8), registries)
    token = [r for r in records if r.name == "token"]
    assert token and token[0].params == 8 and token[0].op == "parameter"
    assert sum(r.params for r in records) == 8 + 8 * 8 + 8
    fc = [r for r in records if r.name == "fc"][0]
    assert fc.counts.dot_products == 2 * 6 * 8 and fc.counts.dot_length == 8


class Opaque(nn.Module):
    """Control flow on a size defeats torch.fx (a proxy has no truth value);
    torch.export specialises the static shape and takes over."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.shape[1] > 4:
            return torch.relu(y)
        return y


def test_export_fallback_keeps_layer_names():
    result = micronet.audit(Opaque(), (1, 3, 10, 10))
    assert result.captured_via == "export"
    conv = [r for r in result.records if r.name == "conv"]
    assert conv and conv[0].counts.dot_products == 8 * 8 * 8 and conv[0].counts.dot_length == 27
    assert any("torch.export" in w for w in result.warnings)


def test_meta_fallback_agrees_with_shape_rules_on_the_zoo(registries):
    """Run each node twice, once by shape rule and once on meta tensors."""
    import torchvision

    for name in ("resnet18", "mobilenet_v3_small", "densenet121", "vit_b_16", "swin_t", "efficientnet_b0"):
        with torch.device("meta"):
            model = torchvision.models.get_model(name).eval()
        cap = trace_fx(model, registries.counters)
        walker = Walker(cap, registries.counters, WalkSettings())
        walker.run(TensorInfo((1, 3, 224, 224)))
        checked = 0
        for node in cap.graph.nodes:
            record = node.meta.get("micronet.record")
            if record is None or node.op not in ("call_module", "call_function", "call_method"):
                continue
            key = walker.registry.shape(
                type(walker.submodules[node.target]) if node.op == "call_module"
                else micronet.Method(node.target) if node.op == "call_method" else node.target)
            if key is None:
                continue
            args, kwargs = walker.fetch_args_kwargs_from_env(node)
            kind = {"call_module": "module", "call_method": "method", "call_function": "function"}[node.op]
            target = (type(walker.submodules[node.target]) if kind == "module"
                      else micronet.Method(node.target) if kind == "method" else node.target)
            call = micronet.OpCall(kind, target, args, kwargs,
                                   walker.submodules.get(node.target) if kind == "module" else None)
            by_meta, _ = execute(walker, node, call, count_aten=False)
            assert node.meta["micronet.value"] == by_meta, (name, node.name)
            checked += 1
        assert checked > 20, name


def test_merged_dot_products_of_another_length_stay_multiply_accumulates():
    from micronet.records import Counts
    from micronet.walk import merge_counts

    conv = Counts(dot_products=100, dot_length=27, sparse_weight=True, adds=100)  # 2700 MACs
    scores = Counts(dot_products=10, dot_length=8)  # 80 MACs of another length
    core = Counts(mults=5, adds=3, other_ops=2, extra_macs=4)
    merged = merge_counts([conv, scores, core])
    assert (merged.dot_products, merged.dot_length, merged.sparse_weight) == (100, 27, True)
    assert merged.mults == 10 * 8 + 5 and merged.adds == 100 + 10 * 7 + 3  # folded in, dense
    assert merged.macs == 2700 + 80 + 4 and merged.extra_macs == 84
    assert (conv + core).macs == 2700 + 4


class Conv2dSame(nn.Conv2d):
    """TensorFlow's 'same' padding, as timm writes it: pads by the input size,
    then convolves without padding. Its own forward computes something else
    than nn.Conv2d's, so it must be traced through, not priced as a Conv2d."""

    def forward(self, x):  # (sizes where the padding is not negative: no max() on traced sizes)
        pad_h = (-(-x.shape[-2] // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - x.shape[-2]
        pad_w = (-(-x.shape[-1] // self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - x.shape[-1]
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class LazyLikeConv(nn.Conv2d):
    """A subclass that keeps nn.Conv2d's forward: still priced as a Conv2d."""


class SameNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.same = Conv2dSame(3, 8, 3, stride=2, padding=0)
        self.plain = LazyLikeConv(8, 4, 1)

    def forward(self, x):
        return self.plain(self.same(x))


def test_a_subclass_with_its_own_forward_is_traced_through(registries):
    result = micronet.audit(SameNet(), (1, 3, 9, 9), registries=registries)
    assert result.captured_via == "fx" and not result.uncounted
    by_name = {r.name: r for r in result.records}
    assert "same" not in by_name  # not one opaque Conv2d record: its insides were traced
    conv = next(r for r in result.records if r.op == "conv2d" and r.name.startswith("same"))
    assert conv.output_shapes == ((1, 8, 5, 5),)  # 'same': ceil(9 / 2), where padding=0 gives 4
    assert conv.counts.dot_products == 8 * 5 * 5 and conv.counts.dot_length == 27
    assert by_name["plain"].op == "conv2d" and by_name["plain"].call_kind == "module"
    assert result.totals["params"] == sum(p.numel() for p in SameNet().parameters())
    assert registries.counters.counter(Conv2dSame) is None
    assert registries.counters.counter(LazyLikeConv) is registries.counters.counter(nn.Conv2d)


def same_pad(x, stride):
    """Control flow on sizes: fx alone cannot trace it (a library marks it untraceable)."""
    if x.shape[-1] % stride:
        return F.pad(x, [0, 1, 0, 1])
    return x


class Padded(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 2, stride=2)

    def forward(self, x):
        return self.conv(same_pad(x, 2))


def test_model_libraries_notrace_registries_are_honoured(registries, monkeypatch):
    """A library that declares a function untraceable (timm's
    ``register_notrace_function``) has it kept as one node, priced on meta."""
    import sys
    import types

    assert micronet.audit(Padded(), (1, 3, 7, 7), registries=registries).captured_via == "export"
    library = types.ModuleType("timm.layers._fx")
    library.get_notrace_functions = lambda: [same_pad]
    library.get_notrace_modules = lambda: []
    monkeypatch.setitem(sys.modules, "timm.layers._fx", library)
    result = micronet.audit(Padded(), (1, 3, 7, 7), registries=registries)
    assert result.captured_via == "fx" and not result.uncounted
    pad = [r for r in result.records if r.target.endswith("same_pad")]
    assert len(pad) == 1 and pad[0].output_shapes == ((1, 3, 8, 8),)
    assert {r.name: r for r in result.records}["conv"].output_shapes == ((1, 4, 4, 4),)


class OwnParameter(nn.Module):
    """A module using a parameter of its own next to a child (a class token),
    with control flow that sends it through torch.export."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 6)
        self.token = nn.Parameter(torch.ones(1, 1, 6))

    def forward(self, x):
        x = torch.cat([self.token.expand(x.shape[0], -1, -1), self.proj(x)], dim=1)
        if x.shape[1] > 2:
            return x * 2
        return x


def test_export_walk_charges_a_modules_own_parameters():
    result = micronet.audit(OwnParameter(), (2, 3, 6))
    assert result.captured_via == "export"
    assert result.totals["params"] == 6 * 6 + 6 + 6 and result.unused_params == 0


class OptionalMask(nn.Module):
    """``mask=None`` by default: traced with its default, not as a second input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x, mask=None, scale: float = 2.0):
        if mask is not None:  # a proxy would take this branch
            x = x * mask.view(x.shape[0], 1)
        return self.fc(x) * scale


def test_optional_forward_arguments_keep_their_defaults(registries):
    result = micronet.audit(OptionalMask(), (3, 4), registries=registries)
    assert result.captured_via == "fx" and not result.uncounted
    assert not any("view" in r.name for r in result.records)
    assert sum(r.counts.mults for r in result.records if r.op == "mul") == 3 * 4  # only the scale


class NoGradInside(nn.Module):
    """A table computed under ``torch.no_grad`` (rotary embeddings do this):
    torch.export wraps it in a higher-order op whose ops must still be counted."""

    def __init__(self):
        super().__init__()
        self.register_buffer("freq", torch.ones(4))

    def forward(self, x):
        with torch.no_grad():
            table = torch.sin(self.freq * 3.0)  # 4 mults + 4 sines
        y = x * table
        if y.shape[0] > 1:
            return y + 1
        return y


def test_export_counts_the_ops_inside_wrapped_subgraphs():
    result = micronet.audit(NoGradInside(), (2, 4))
    assert result.captured_via == "export" and not result.uncounted
    assert result.totals["other_ops"] == 4  # the sines, found inside the wrapper
    assert result.totals["mults"] == 4 + 8  # freq * 3 and x * table


def test_torch_own_subclasses_keep_their_base_counter(registries):
    """QAT and quantized modules of torch.ao override forward but compute the same op."""
    import torch.ao.nn.qat as qat

    counters = registries.counters
    assert counters.counter(qat.Conv2d) is counters.counter(nn.Conv2d)
    assert counters.counter(qat.Linear) is counters.counter(nn.Linear)
