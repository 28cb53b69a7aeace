"""Recurrent layers by closed form: ``nn.LSTM``, ``nn.GRU``, ``nn.LSTMCell``, ``nn.GRUCell``.

Counted per time step, per layer, per direction, per batch row, in units of
operations (mults, adds, other_ops = transcendentals); the activations
follow :mod:`micronet.counters.activation` (sigmoid (2 mults, 1 add), tanh
1 transcendental). Notation: ``I`` the layer's input size (``input_size``
for layer 0, ``D * Hp`` above it), ``H`` the hidden size, ``Hp`` the size of
``h`` (``proj_size`` when set, else ``H``), ``b`` 1 with biases, else 0.

LSTM (torch's gate order i, f, g, o)::

    gates = W_ih x + b_ih + W_hh h + b_hh     4H dot products of I + Hp terms: 4H(I+Hp) MACs,
                                              4H(I+Hp) mults, 4H(I+Hp-1) adds; biases 2*4H*b adds
    i, f, o = sigmoid(.)                      3H sigmoids: 6H mults, 3H adds
    g = tanh(.)                               H transcendentals
    c' = f*c + i*g                            2H mults, H adds
    h' = o * tanh(c')                         H mults, H transcendentals
    h' = W_hr h'   (proj_size only)           Hp*H MACs: Hp*H mults, Hp*(H-1) adds

    mults = 4H(I+Hp) + 9H [+ Hp*H];  adds = 4H(I+Hp) + 8H*b [+ Hp*(H-1)];  other_ops = 2H

GRU (gates r, z, n)::

    r, z = sigmoid(W_i. x + b_i. + W_h. h + b_h.)   2H dot products of I + H terms, 2H sigmoids
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))   H dot products of I and of H terms, their sum
                                                    (1 add), r * (.) (1 mult), H transcendentals
    h' = (1 - z) * n + z * h                        2H mults, 2H adds (1 - z is a subtraction)

    MACs = 3H(I+H); mults = 3H(I+H) + 7H;  adds = 3H(I+H) + H + 6H*b;  other_ops = H

(the GRU's adds: r and z 2H(I+H-1), ``W_in x`` H(I-1), ``W_hn h`` H(H-1),
joining them H, so 3H(I+H-1) in all, plus 4H from the sigmoids and the update.) The products are multiply-accumulates over stored weights but are
booked as dense ``mults`` / ``adds`` (their lengths differ between layers
and Counts holds one ``dot_length``), with their MACs in ``extra_macs``;
weight sparsity does not shrink them. Zero initial states are not
exploited (runtime zeros, RULES.md section 1). Dropout between layers is a
training-time op and is free. A ``PackedSequence`` given to the module is
left to the aten fallback, where ``aten.lstm.data`` / ``aten.gru.data``
count its packed rows exactly; ``aten.lstm`` / ``aten.gru`` / the cells'
aten forms (torch.export keeps them whole) read the sizes from the weights.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

from micronet.counters._common import tensor_arg
from micronet.manager import hookimpl
from micronet.records import Counts, TensorInfo
from micronet.registry import OpCall, collect, counter


@dataclass(frozen=True, slots=True)
class StepCost:
    """Ops of one time step of one layer and direction for one batch row."""

    mults: int
    adds: int
    other_ops: int
    macs: int

    def times(self, n: int) -> Counts:
        return Counts(mults=self.mults * n, adds=self.adds * n, other_ops=self.other_ops * n,
                      extra_macs=self.macs * n)


def lstm_step(inputs: int, hidden: int, bias: bool, proj: int = 0) -> StepCost:
    """One LSTM step (see the module docstring): ``inputs`` = I, ``hidden`` = H,
    ``proj`` = proj_size (0: none). Units: mults, adds, transcendentals, MACs."""
    h, hp = hidden, proj or hidden
    macs = 4 * h * (inputs + hp) + (hp * h if proj else 0)
    mults = 4 * h * (inputs + hp) + 9 * h + (hp * h if proj else 0)
    adds = 4 * h * (inputs + hp) + 8 * h * int(bias) + (hp * (h - 1) if proj else 0)
    return StepCost(mults, adds, 2 * h, macs)


def gru_step(inputs: int, hidden: int, bias: bool) -> StepCost:
    """One GRU step (see the module docstring). Units: mults, adds, transcendentals, MACs."""
    h = hidden
    macs = 3 * h * (inputs + h)
    return StepCost(macs + 7 * h, macs + h + 6 * h * int(bias), h, macs)


def _steps_and_batch(call: OpCall, m: nn.RNNBase) -> tuple[int, int]:
    """``(T, N)`` from the input: ``[T, N, I]`` (``[N, T, I]`` with batch_first) or unbatched ``[T, I]``."""
    x = call.arg(0, "input")
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise NotImplementedError("a PackedSequence input is left to the aten fallback")
    x = tensor_arg(x, "input")
    if x.ndim == 2:
        return x.shape[0], 1
    if x.ndim != 3 or x.shape[-1] != m.input_size:
        raise NotImplementedError(f"{type(m).__name__} input {list(x.shape)} does not fit")
    return (x.shape[1], x.shape[0]) if m.batch_first else (x.shape[0], x.shape[1])


def _layers(m: nn.RNNBase, step) -> StepCost:
    """Sum over layers and directions of one step's cost (layer l > 0 reads D * Hp inputs)."""
    return _stack(m.input_size, getattr(m, "proj_size", 0) or m.hidden_size, m.num_layers,
                  2 if m.bidirectional else 1, step)


def _stack(input_size: int, out: int, layers: int, directions: int, step) -> StepCost:
    """Sum over ``layers`` and ``directions`` of ``step(I_l)``, ``I_0 = input_size``,
    ``I_l = directions * out`` above (``out``: the size of h, Hp)."""
    total = StepCost(0, 0, 0, 0)
    for layer in range(layers):
        cost = step(input_size if layer == 0 else directions * out)
        total = StepCost(total.mults + directions * cost.mults, total.adds + directions * cost.adds,
                         total.other_ops + directions * cost.other_ops, total.macs + directions * cost.macs)
    return total


@counter(nn.LSTM)
def lstm(call: OpCall) -> Counts:
    """``nn.LSTM``: T steps x N rows x layers x directions of :func:`lstm_step`.

    Args ``(input, (h_0, c_0)=None)``; sizes, layers, directions, bias and
    ``proj_size`` come from the module.

    # x: [T, N, I] (batch_first: [N, T, I]; unbatched [T, I], N = 1)
    # counts = T * N * sum over layers l, directions d of lstm_step(I_l, H, bias, proj_size)
    """
    m = call.module
    steps, batch = _steps_and_batch(call, m)
    return _layers(m, lambda i: lstm_step(i, m.hidden_size, m.bias, m.proj_size)).times(steps * batch)


@counter(nn.GRU)
def gru(call: OpCall) -> Counts:
    """``nn.GRU``: T steps x N rows x layers x directions of :func:`gru_step`.

    # x: [T, N, I] (batch_first: [N, T, I]; unbatched [T, I], N = 1)
    # counts = T * N * sum over layers l, directions d of gru_step(I_l, H, bias)
    """
    m = call.module
    steps, batch = _steps_and_batch(call, m)
    return _layers(m, lambda i: gru_step(i, m.hidden_size, m.bias)).times(steps * batch)


def _cell_batch(call: OpCall, m: nn.RNNCellBase) -> int:
    x = tensor_arg(call.arg(0, "input"), "input")
    if x.ndim not in (1, 2) or x.shape[-1] != m.input_size:
        raise NotImplementedError(f"{type(m).__name__} input {list(x.shape)} does not fit")
    return x.shape[0] if x.ndim == 2 else 1


@counter(nn.LSTMCell)
def lstm_cell(call: OpCall) -> Counts:
    """``nn.LSTMCell``: one :func:`lstm_step` per batch row.

    # x: [N, I] or [I];  counts = N * lstm_step(I, H, bias)
    """
    m = call.module
    return lstm_step(m.input_size, m.hidden_size, m.bias).times(_cell_batch(call, m))


@counter(nn.GRUCell)
def gru_cell(call: OpCall) -> Counts:
    """``nn.GRUCell``: one :func:`gru_step` per batch row.

    # x: [N, I] or [I];  counts = N * gru_step(I, H, bias)
    """
    m = call.module
    return gru_step(m.input_size, m.hidden_size, m.bias).times(_cell_batch(call, m))


# ------------------------------------------------------------ aten forms (torch.export keeps them whole)

aten = torch.ops.aten


def _aten_rnn(call: OpCall, gates: int, step) -> Counts:
    """``aten.lstm`` / ``aten.gru``, ``.input`` or ``.data`` (a PackedSequence's
    rows: one step of one sequence each, counted exactly). Sizes come from the
    flat ``params`` list: ``w_ih`` of layer 0 is ``[gates*H, I]``, ``w_hh``
    ``[gates*H, Hp]`` (``Hp != H``: an LSTM projection)."""
    packed = getattr(call.target, "_overloadname", "input") == "data"
    first = 1 if packed else 0  # .data has batch_sizes after data
    x = tensor_arg(call.arg(0, "data" if packed else "input"), "input")
    params = call.arg(first + 2, "params")
    if not isinstance(params, (list, tuple)) or len(params) < 2 or not all(
            isinstance(p, TensorInfo) and p.ndim == 2 for p in params[:2]):
        raise NotImplementedError("recurrent weights are not [gates*H, I] matrices")
    bias, layers = bool(call.arg(first + 3, "has_biases")), int(call.arg(first + 4, "num_layers"))
    directions = 2 if call.arg(first + 7, "bidirectional") else 1
    hidden, input_size, out = params[0].shape[0] // gates, params[0].shape[1], params[1].shape[1]
    if packed:
        rows = x.shape[0]
    elif x.ndim == 3:
        rows = x.shape[0] * x.shape[1]
    elif x.ndim == 2:
        rows = x.shape[0]
    else:
        raise NotImplementedError(f"recurrent input {list(x.shape)} is not [T, N, I] or [T, I]")
    return _stack(input_size, out, layers, directions, lambda i: step(i, hidden, bias, out)).times(rows)


@counter(aten.lstm)
def lstm_aten(call: OpCall) -> Counts:
    """``aten.lstm`` (``.input`` / ``.data``): as :func:`lstm`, sizes from the weights.

    # rows = T*N (.input) or data.shape[0] (.data);  counts = rows * sum over l, d of lstm_step
    """
    return _aten_rnn(call, 4, lambda i, h, bias, out: lstm_step(i, h, bias, out if out != h else 0))


@counter(aten.gru)
def gru_aten(call: OpCall) -> Counts:
    """``aten.gru`` (``.input`` / ``.data``): as :func:`gru`, sizes from the weights.

    # rows = T*N (.input) or data.shape[0] (.data);  counts = rows * sum over l, d of gru_step
    """
    return _aten_rnn(call, 3, lambda i, h, bias, out: gru_step(i, h, bias))


def _aten_cell(call: OpCall, gates: int) -> tuple[int, int, int, bool]:
    """``(rows, I, H, bias)`` of ``aten.lstm_cell`` / ``aten.gru_cell``."""
    x, w_ih = tensor_arg(call.arg(0, "input"), "input"), tensor_arg(call.arg(2, "w_ih"), "w_ih")
    if x.ndim not in (1, 2) or w_ih.ndim != 2:
        raise NotImplementedError("recurrent cell operands do not fit")
    rows = x.shape[0] if x.ndim == 2 else 1
    return rows, w_ih.shape[1], w_ih.shape[0] // gates, isinstance(call.arg(4, "b_ih", None), TensorInfo)


@counter(aten.lstm_cell)
def lstm_cell_aten(call: OpCall) -> Counts:
    """``aten.lstm_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)``: N * lstm_step(I, H, bias)."""
    rows, inputs, hidden, bias = _aten_cell(call, 4)
    return lstm_step(inputs, hidden, bias).times(rows)


@counter(aten.gru_cell)
def gru_cell_aten(call: OpCall) -> Counts:
    """``aten.gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None)``: N * gru_step(I, H, bias)."""
    rows, inputs, hidden, bias = _aten_cell(call, 3)
    return gru_step(inputs, hidden, bias).times(rows)


@hookimpl
def micronet_register_counters():
    return collect(sys.modules[__name__])
