"""Normalisation layers: BatchNorm, LayerNorm, GroupNorm, InstanceNorm, RMSNorm.

Two kinds, following RULES.md section 1:

- **Folded** (BatchNorm, and InstanceNorm with running statistics, in
  inference): statistics are constants, so the layer is ``y = a * x + b``
  per channel. The scale ``a`` folds into the preceding conv / linear and
  is free; the bias costs one add per output element. Counts:
  ``adds = E``, ``folded_params = C`` when there is an affine weight.
- **Run-time statistics** (LayerNorm, GroupNorm, InstanceNorm without running
  statistics, RMSNorm, BatchNorm in training mode or without running
  statistics): every group of ``n`` normalised elements costs

  ========================= ============ ============ =========
  step                      adds         mults        other_ops
  ========================= ============ ============ =========
  mean = sum(x) / n          n - 1        1
  var = sum((x-mean)^2) / n  n + n - 1    n + 1
  + eps, rsqrt               1                         1
  (x - mean) * rstd          n            n
  affine weight / bias       n (bias)     n (weight)
  ========================= ============ ============ =========

  i.e. ``adds = 4n - 1 (+ n)``, ``mults = 2n + 2 (+ n)``, ``other_ops = 1``
  per group. ``x - mean`` is counted in both the variance and the
  normalisation (a two-pass kernel recomputes it). RMSNorm has no mean:
  ``mults = 2n + 1 (+ n)``, ``adds = n``, ``other_ops = 1``.

Module layers are counted as they run in eval mode (running statistics
used when the module tracks them); the functional and aten forms follow
their ``training`` / ``use_input_stats`` argument. The multi-output aten
kernels (``native_*``) have counters but no shape rules (the walker runs
them on meta tensors).
"""
from __future__ import annotations

import sys

import torch
from torch import nn
import torch.nn.functional as F

from micronet.counters._common import like, prod, tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import Method, OpCall, collect, counter, shape_rule

aten = torch.ops.aten

BATCH_NORM_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
INSTANCE_NORM_MODULES = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
#: ``aten.batch_norm`` layout: (input, weight, bias, running_mean, running_var, training, ...)
ATEN_BATCH_NORM = (aten.batch_norm, torch.batch_norm, aten.native_batch_norm,
                   aten._native_batch_norm_legit, aten._native_batch_norm_legit_functional)


def runtime_norm_counts(groups: int, n: int, weight: bool, bias: bool) -> Counts:
    """Run-time normalisation of ``groups`` groups of ``n`` elements (module docstring table).

    # per group: adds = (n-1) + (n + n-1) + 1 + n [+ n bias] = 4n - 1 [+ n]
    #            mults = 1 + (n + 1) + n [+ n weight] = 2n + 2 [+ n]; other_ops = 1 (rsqrt)
    """
    if groups == 0 or n == 0:
        return Counts()
    adds = 4 * n - 1 + (n if bias else 0)
    mults = 2 * n + 2 + (n if weight else 0)
    return Counts(mults=groups * mults, adds=groups * adds, other_ops=groups)


def folded_norm_counts(x: TensorInfo, channels: int, weight: bool) -> Counts:
    """Inference-time batch norm: the scale folds (free), one bias add per element.

    # x: [N, C, *spatial]; adds = N*C*prod(spatial), folded_params = C if weight
    """
    return Counts(adds=x.numel, folded_params=channels if weight else 0)


def rms_norm_counts(groups: int, n: int, weight: bool) -> Counts:
    """RMSNorm of ``groups`` groups of ``n`` elements: no mean, no bias.

    # per group: square n mults; sum n-1 adds; / n 1 mult; + eps 1 add; rsqrt 1 other_op
    #            x * rstd n mults; weight n mults -> mults = 2n + 1 [+ n], adds = n
    """
    if groups == 0 or n == 0:
        return Counts()
    return Counts(mults=groups * (2 * n + 1 + (n if weight else 0)), adds=groups * n, other_ops=groups)


def batch_norm_counts(x: TensorInfo, weight, bias, runtime: bool) -> Counts:
    """Batch norm over ``x: [N, C, *spatial]``: folded, or run-time statistics per channel
    (``C`` groups of ``N*prod(spatial)`` elements)."""
    channels = x.shape[1] if x.ndim > 1 else x.numel
    if runtime:
        return runtime_norm_counts(channels, x.numel // max(channels, 1), weight, bias)
    return folded_norm_counts(x, channels, weight)


def _module_affine(m: nn.Module) -> tuple[bool, bool]:
    return getattr(m, "weight", None) is not None, getattr(m, "bias", None) is not None


@counter(*BATCH_NORM_MODULES)
def batch_norm_module(call: OpCall) -> Counts:
    """``nn.BatchNormNd`` / ``nn.SyncBatchNorm`` in eval mode: ``E`` bias adds, the scale folds.

    Args ``(input,)``. Without running statistics (``track_running_stats=False``)
    the batch statistics are computed at run time: ``C`` groups of
    ``N*prod(spatial)`` elements (module docstring table).

    # x: [N, C, *spatial]; adds = N*C*prod(spatial), folded_params = C if affine
    """
    m = call.module
    weight, bias = _module_affine(m)
    return batch_norm_counts(call.x, weight, bias, runtime=m.running_mean is None)


@counter(F.batch_norm)
def batch_norm_function(call: OpCall) -> Counts:
    """``F.batch_norm(input, running_mean, running_var, weight=None, bias=None,
    training=False, momentum=0.1, eps=1e-5)``: folded unless ``training`` or
    no running statistics (then run-time statistics per channel).

    # x: [N, C, *spatial]; adds = N*C*prod(spatial), folded_params = C if weight
    """
    runtime = bool(call.arg(5, "training", False)) or call.arg(1, "running_mean") is None
    return batch_norm_counts(call.x, call.arg(3, "weight", None) is not None,
                             call.arg(4, "bias", None) is not None, runtime)


@counter(*ATEN_BATCH_NORM)
def batch_norm_aten(call: OpCall) -> Counts:
    """``aten.batch_norm`` / ``torch.batch_norm`` / ``aten.native_batch_norm`` /
    ``aten._native_batch_norm_legit[_functional]``: args ``(input, weight,
    bias, running_mean, running_var, training, momentum, eps, ...)``; the
    ``no_stats`` overload drops the running statistics (always run time).

    # x: [N, C, *spatial]; adds = N*C*prod(spatial), folded_params = C if weight
    """
    if getattr(call.target, "_overloadname", "") == "no_stats":
        runtime = True
    else:
        runtime = bool(call.arg(5, "training", False)) or call.arg(3, "running_mean", None) is None
    return batch_norm_counts(call.x, call.arg(1, "weight", None) is not None,
                             call.arg(2, "bias", None) is not None, runtime)


@counter(aten._native_batch_norm_legit_no_training)
def batch_norm_no_training_aten(call: OpCall) -> Counts:
    """``aten._native_batch_norm_legit_no_training(input, weight, bias, running_mean,
    running_var, momentum, eps)``: always folded (what ``torch.export`` emits in eval).

    # x: [N, C, *spatial]; adds = N*C*prod(spatial), folded_params = C if weight
    """
    return batch_norm_counts(call.x, call.arg(1, "weight", None) is not None,
                             call.arg(2, "bias", None) is not None, runtime=False)


def _layer_norm(x: TensorInfo, normalized_shape, weight: bool, bias: bool) -> Counts:
    n = prod(normalized_shape)
    return runtime_norm_counts(x.numel // n if n else 0, n, weight, bias)


@counter(nn.LayerNorm)
def layer_norm_module(call: OpCall) -> Counts:
    """``nn.LayerNorm``: run-time statistics over the trailing ``normalized_shape``.

    Args ``(input,)``; ``elementwise_affine`` gives a weight and (unless
    ``bias=False``) a bias.

    # x: [..., *normalized_shape]; n = prod(normalized_shape), groups = numel / n
    # adds = groups*(4n - 1 [+ n]), mults = groups*(2n + 2 [+ n]), other_ops = groups
    """
    m = call.module
    return _layer_norm(call.x, m.normalized_shape, *_module_affine(m))


@counter(F.layer_norm, aten.layer_norm, torch.layer_norm, aten.native_layer_norm)
def layer_norm_function(call: OpCall) -> Counts:
    """``F.layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5)``
    (same layout for ``aten.layer_norm`` / ``aten.native_layer_norm``): as
    :func:`layer_norm_module`.

    # x: [..., *normalized_shape]; n = prod(normalized_shape), groups = numel / n
    """
    return _layer_norm(call.x, tuple(call.arg(1, "normalized_shape")),
                       call.arg(2, "weight", None) is not None, call.arg(3, "bias", None) is not None)


def _group_norm(x: TensorInfo, groups: int, weight: bool, bias: bool) -> Counts:
    # x: [N, C, *spatial]: N*groups groups of C/groups * prod(spatial) elements
    count = x.shape[0] * groups
    return runtime_norm_counts(count, x.numel // count if count else 0, weight, bias)


@counter(nn.GroupNorm)
def group_norm_module(call: OpCall) -> Counts:
    """``nn.GroupNorm``: run-time statistics per (sample, group); affine per channel,
    applied to every element.

    # x: [N, C, *spatial]; G groups: N*G groups of n = C/G * prod(spatial)
    # adds = N*G*(4n - 1 [+ n]), mults = N*G*(2n + 2 [+ n]), other_ops = N*G
    """
    m = call.module
    return _group_norm(call.x, m.num_groups, *_module_affine(m))


@counter(F.group_norm, aten.group_norm, torch.group_norm)
def group_norm_function(call: OpCall) -> Counts:
    """``F.group_norm(input, num_groups, weight=None, bias=None, eps=1e-5)``
    (also ``aten.group_norm``): as :func:`group_norm_module`."""
    return _group_norm(call.x, call.arg(1, "num_groups"), call.arg(2, "weight", None) is not None,
                       call.arg(3, "bias", None) is not None)


@counter(aten.native_group_norm)
def native_group_norm_aten(call: OpCall) -> Counts:
    """``aten.native_group_norm(input, weight, bias, N, C, HxW, group, eps)``: as
    :func:`group_norm_module` (``N * group`` groups of ``C/group * HxW``)."""
    return _group_norm(call.x, call.arg(6, "group"), call.arg(1, "weight", None) is not None,
                       call.arg(2, "bias", None) is not None)


def _instance_norm(x: TensorInfo, spatial_dims: int, weight: bool, bias: bool, runtime: bool) -> Counts:
    # x: [N, C, *spatial] or [C, *spatial]: numel / n groups of n = prod(spatial)
    if not runtime:
        return folded_norm_counts(x, x.shape[-spatial_dims - 1], weight)
    n = prod(x.shape[-spatial_dims:])
    return runtime_norm_counts(x.numel // n if n else 0, n, weight, bias)


@counter(*INSTANCE_NORM_MODULES)
def instance_norm_module(call: OpCall) -> Counts:
    """``nn.InstanceNormNd`` in eval mode: run-time statistics per (sample, channel);
    with ``track_running_stats`` the running statistics are used and it folds like BatchNorm.

    # x: [N, C, *spatial]; N*C groups of n = prod(spatial) (no affine by default)
    # adds = N*C*(4n - 1 [+ n]), mults = N*C*(2n + 2 [+ n]), other_ops = N*C
    """
    m = call.module
    nd = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}[_family(m, INSTANCE_NORM_MODULES)]
    return _instance_norm(call.x, nd, *_module_affine(m), runtime=m.running_mean is None)


def _family(m: nn.Module, classes: tuple) -> type:
    return next(c for c in classes if isinstance(m, c))


@counter(F.instance_norm)
def instance_norm_function(call: OpCall) -> Counts:
    """``F.instance_norm(input, running_mean=None, running_var=None, weight=None,
    bias=None, use_input_stats=True, momentum=0.1, eps=1e-5)``: as
    :func:`instance_norm_module`; folds when ``use_input_stats`` is false.

    # x: [N, C, *spatial]
    """
    x = call.x
    return _instance_norm(x, x.ndim - 2, call.arg(3, "weight", None) is not None,
                          call.arg(4, "bias", None) is not None, bool(call.arg(5, "use_input_stats", True)))


@counter(aten.instance_norm, torch.instance_norm)
def instance_norm_aten(call: OpCall) -> Counts:
    """``aten.instance_norm(input, weight, bias, running_mean, running_var,
    use_input_stats, momentum, eps, cudnn_enabled)``: as :func:`instance_norm_function`."""
    x = call.x
    return _instance_norm(x, x.ndim - 2, call.arg(1, "weight", None) is not None,
                          call.arg(2, "bias", None) is not None, bool(call.arg(5, "use_input_stats")))


@counter(nn.RMSNorm)
def rms_norm_module(call: OpCall) -> Counts:
    """``nn.RMSNorm``: root-mean-square over the trailing ``normalized_shape``, no mean, no bias.

    # x: [..., *normalized_shape]; n = prod(normalized_shape), groups = numel / n
    # mults = groups*(2n + 1 [+ n]), adds = groups*n, other_ops = groups
    """
    m = call.module
    n = prod(m.normalized_shape)
    return rms_norm_counts(call.x.numel // n if n else 0, n, m.weight is not None)


@counter(F.rms_norm, aten.rms_norm, aten._fused_rms_norm)
def rms_norm_function(call: OpCall) -> Counts:
    """``F.rms_norm(input, normalized_shape, weight=None, eps=None)`` (also aten):
    as :func:`rms_norm_module`."""
    n = prod(call.arg(1, "normalized_shape"))
    return rms_norm_counts(call.x.numel // n if n else 0, n, call.arg(2, "weight", None) is not None)


# ------------------------------------------------------------------ shapes


def _same(x, channel_dim: int | None = None, channels: int | None = None, ranks=None) -> TensorInfo:
    """The input's shape and dtype, once ranks and channel count check out."""
    x = tensor_arg(x, "input")
    if ranks is not None and x.ndim not in ranks:
        raise NotImplementedError(f"expected a tensor of rank {ranks}, got {x.ndim}")
    needed = channel_dim + 1 if channel_dim >= 0 else -channel_dim
    if channels is not None and (x.ndim < needed or x.shape[channel_dim] != channels):
        raise NotImplementedError(f"expected {channels} channels, got {list(x.shape)}")
    return like(x)


_BN_RANKS = {nn.BatchNorm1d: (2, 3), nn.BatchNorm2d: (4,), nn.BatchNorm3d: (5,), nn.SyncBatchNorm: None}


@shape_rule(*BATCH_NORM_MODULES)
def batch_norm_module_shape(call: OpCall) -> TensorInfo:
    """Same shape; ``num_features`` channels at dim 1."""
    m = call.module
    x = _same(call.x, 1, m.num_features, _BN_RANKS[_family(m, BATCH_NORM_MODULES)])
    if (m.training or m.running_mean is None) and x.numel <= m.num_features:
        raise NotImplementedError("batch statistics need more than one value per channel")
    return x


@shape_rule(F.batch_norm)
def batch_norm_function_shape(call: OpCall) -> TensorInfo:
    """Same shape; channels at dim 1 match the running statistics / weight."""
    stats = call.arg(1, "running_mean")
    if bool(call.arg(5, "training", False)) or stats is None:
        raise NotImplementedError("training-mode batch norm checks the batch size: meta decides")
    return _same(call.x, 1, tensor_arg(stats, "running_mean").numel)


@shape_rule(aten.batch_norm, torch.batch_norm)
def batch_norm_aten_shape(call: OpCall) -> TensorInfo:
    """Same shape (inference only; training mode is left to meta execution)."""
    stats = call.arg(3, "running_mean", None)
    if bool(call.arg(5, "training", False)) or stats is None:
        raise NotImplementedError("training-mode batch norm checks the batch size: meta decides")
    return _same(call.x, 1, tensor_arg(stats, "running_mean").numel)


@shape_rule(nn.LayerNorm, nn.RMSNorm)
def layer_norm_module_shape(call: OpCall) -> TensorInfo:
    """Same shape; the trailing dims must be ``normalized_shape``."""
    return _trailing(call.x, call.module.normalized_shape)


@shape_rule(F.layer_norm, aten.layer_norm, torch.layer_norm, F.rms_norm, aten.rms_norm)
def layer_norm_function_shape(call: OpCall) -> TensorInfo:
    """Same shape; the trailing dims must be ``normalized_shape``."""
    return _trailing(call.x, call.arg(1, "normalized_shape"))


def _trailing(x, normalized_shape) -> TensorInfo:
    x, shape = tensor_arg(x, "input"), tuple(normalized_shape)
    if not shape or x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise NotImplementedError(f"normalized_shape {list(shape)} is not the end of {list(x.shape)}")
    return like(x)


@shape_rule(nn.GroupNorm)
def group_norm_module_shape(call: OpCall) -> TensorInfo:
    """Same shape; ``num_channels`` at dim 1."""
    m = call.module
    return _grouped(call.x, m.num_groups, m.num_channels)


@shape_rule(F.group_norm, aten.group_norm, torch.group_norm)
def group_norm_function_shape(call: OpCall) -> TensorInfo:
    """Same shape; channels at dim 1 divisible by ``num_groups``."""
    x = tensor_arg(call.x, "input")
    weight = call.arg(2, "weight", None)
    return _grouped(x, call.arg(1, "num_groups"), weight.numel if weight is not None else None)


def _grouped(x: TensorInfo, groups: int, channels: int | None) -> TensorInfo:
    if x.ndim < 2 or groups < 1 or x.shape[1] % groups or (channels is not None and x.shape[1] != channels):
        raise NotImplementedError(f"group norm of {x} in {groups} groups")
    if x.shape[0] * groups == 0:
        raise NotImplementedError("empty group norm")
    return like(x)


_IN_RANKS = {nn.InstanceNorm1d: (2, 3), nn.InstanceNorm2d: (3, 4), nn.InstanceNorm3d: (4, 5)}


@shape_rule(*INSTANCE_NORM_MODULES)
def instance_norm_module_shape(call: OpCall) -> TensorInfo:
    """Same shape; 1d takes ``[N, C, L]`` or ``[C, L]``, and so on."""
    m = call.module
    family = _family(m, INSTANCE_NORM_MODULES)
    nd = {nn.InstanceNorm1d: 1, nn.InstanceNorm2d: 2, nn.InstanceNorm3d: 3}[family]
    checked = m.affine or m.track_running_stats  # torch only warns otherwise
    return _same(call.x, -nd - 1, m.num_features if checked else None, _IN_RANKS[family])


# ------------------------------------------------------------ vector norms
#
# ``torch.linalg.vector_norm(x, ord=2, dim)`` over vectors of n elements:
# n mults (squares), n - 1 adds, 1 sqrt (other op) per vector. Other orders
# are counted the same way (|x|^p as one mult each). ``F.normalize`` adds a
# clamp (1 comparison, other op) per vector and n divisions (mults).


def _reduced(x: TensorInfo, dim, keepdim: bool) -> tuple[tuple[int, ...], int]:
    """(output shape, elements per reduced vector) of a reduction over ``dim``."""
    if dim is None:
        dims = tuple(range(x.ndim))
    else:
        dims = tuple(d % max(x.ndim, 1) for d in ((dim,) if isinstance(dim, int) else dim))
    n = prod(x.shape[d] for d in dims)
    shape = tuple(1 if i in dims else s for i, s in enumerate(x.shape) if keepdim or i not in dims)
    return shape, n


def _vector_norm_args(call: OpCall) -> tuple[TensorInfo, object, bool]:
    # vector_norm, torch.norm and Tensor.norm share (input, ord/p, dim, keepdim)
    return tensor_arg(call.x, "input"), call.arg(2, "dim", None), bool(call.arg(3, "keepdim", False))


VECTOR_NORM = (torch.linalg.vector_norm, aten.linalg_vector_norm, torch.norm, Method("norm"))


@counter(*VECTOR_NORM, op="vector_norm")
def vector_norm(call: OpCall) -> Counts:
    """Norm of each vector: ``n`` mults, ``n - 1`` adds, 1 sqrt per output element.

    Layout: ``(input, ord=2, dim=None, keepdim=False)``. # x: [..., n] -> y: [...]
    """
    x, dim, keepdim = _vector_norm_args(call)
    shape, n = _reduced(x, dim, keepdim)
    vectors = prod(shape)
    return Counts(mults=vectors * n, adds=vectors * max(n - 1, 0), other_ops=vectors)


@shape_rule(*VECTOR_NORM)
def vector_norm_shape(call: OpCall) -> TensorInfo:
    """The input shape with ``dim`` reduced (kept as size 1 with ``keepdim``)."""
    x, dim, keepdim = _vector_norm_args(call)
    if x.ndim == 0:
        raise NotImplementedError("norm of a scalar")
    dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
    return TensorInfo(_reduced(x, dim, keepdim)[0], dtype)


@counter(F.normalize, op="normalize")
def normalize(call: OpCall) -> Counts:
    """``F.normalize(x, p=2, dim=1, eps)``: a vector norm, a clamp at ``eps`` and
    a division per element. Per vector of n: 2n mults, n - 1 adds, 2 other ops.
    """
    x = tensor_arg(call.x, "input")
    dim = call.arg(2, "dim", 1)
    shape, n = _reduced(x, dim, True)
    vectors = prod(shape)
    return Counts(mults=2 * vectors * n, adds=vectors * max(n - 1, 0), other_ops=2 * vectors)


@shape_rule(F.normalize)
def normalize_shape(call: OpCall) -> TensorInfo:
    """Same shape as the input."""
    return like(tensor_arg(call.x, "input"))


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
