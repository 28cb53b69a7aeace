"""Two modules micronet has never seen, and how to count them.

``ClippedReLU`` is an activation: a counter gives its cost per element.
``ScaledLinear`` is a weighted layer: its counter books the weighted sums as
dot products over the weight, so that pruning the weight shrinks its ops.
"""
import torch
import torch.nn.functional as F
from torch import nn

from micronet.plugin import Counts, OpCall, TensorInfo, counter, shape_rule


class ClippedReLU(nn.Module):
    """min(max(x, 0), ceiling): a ReLU with a ceiling, as used for low-bit activations."""

    def __init__(self, ceiling: float = 6.0):
        super().__init__()
        self.ceiling = ceiling

    def forward(self, x):
        return torch.clamp(x, 0.0, self.ceiling)


@counter(ClippedReLU, op="clipped_relu")
def count_clipped_relu(call: OpCall) -> Counts:
    """Two comparisons per element, booked as multiplies like ReLU's one.

    # x: [*]  y: [*]  mults = 2 * numel(y)
    """
    return Counts(mults=2 * call.y.numel)


@shape_rule(ClippedReLU)
def clipped_relu_shape(call: OpCall) -> TensorInfo:
    """Same shape and dtype as the input."""
    return call.x


class ScaledLinear(nn.Module):
    """y = (x @ weight.T) * scale + bias: a linear layer with a learned scale
    per output (as binary and ternary networks keep beside their weights)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / in_features ** 0.5)
        self.scale = nn.Parameter(torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        y = F.linear(x, self.weight) * self.scale
        return y + self.bias if self.bias is not None else y


@counter(ScaledLinear, op="scaled_linear")
def count_scaled_linear(call: OpCall) -> Counts:
    """Per output element: one dot product of ``in_features`` terms over the
    weight (its sparsity shrinks it), one multiply by the scale, one bias add.

    # x: [*, in]  weight: [out, in]  y: [*, out]
    # dot_products = numel(y), dot_length = in, mults = numel(y), adds = numel(y) if bias
    """
    outputs = call.y.numel
    return Counts(dot_products=outputs, dot_length=call.module.in_features, sparse_weight=True,
                  mults=outputs, adds=outputs if call.module.bias is not None else 0)


@shape_rule(ScaledLinear)
def scaled_linear_shape(call: OpCall) -> TensorInfo:
    """[*, in] -> [*, out], the input's dtype."""
    x = call.x
    return TensorInfo(x.shape[:-1] + (call.module.out_features,), x.dtype)
