"""float8 and sub-byte weights: zeros counted, bits taken from the dtype."""
import torch
from torch import nn

import micronet
from micronet.precision import dtype_bits
from micronet.sparsity import count_nonzero, measure


class Fp8Linear(nn.Module):
    """A Linear(8, 4) whose weight is float8_e4m3fn with its first two input columns zero."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 4, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.arange(1, 33, dtype=torch.float32).reshape(4, 8) / 8)
            self.fc.weight[:, :2] = 0
            self.fc.weight[0, 2] = -0.0  # -0 is a zero too
        self.fc.weight = nn.Parameter(self.fc.weight.detach().to(torch.float8_e4m3fn), requires_grad=False)

    def forward(self, x):
        return self.fc(x)


def test_float8_weight_audits_at_8_bits_with_its_zeros():
    model = Fp8Linear()
    upcast = model.fc.weight.to(torch.float32)
    assert int(torch.count_nonzero(upcast)) == 23  # 32 - 8 (two columns) - 1 (the -0)
    r = micronet.audit(model, (1, 8), input_dtype="float32", freebie=False)
    record, cost = next((rec, c) for rec, c in r.layers if rec.name == "fc")
    assert record.weight_bits == 8
    assert record.weight_nonzero == 23
    assert record.weight_block == (1,)  # the -0 breaks the column blocks
    assert cost.storage == 23 * 8 / 32 + 32 / 32  # nonzeros at 8 bits + 1 bit per element
    assert cost.mults == 4 * 8 * 23 / 32  # L = 8 * (1 - s), 4 outputs


def test_float8_zeros_match_the_upcast_for_every_float8_dtype():
    values = torch.tensor([0.0, -0.0, 1.0, -2.0, 0.5, 0.0, 3.0, -0.25])
    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz):
        assert dtype_bits(dtype) == 8
        assert count_nonzero(values.to(dtype)) == 5, dtype


def test_int4_and_uint4_are_4_bits_and_their_zeros_count():
    raw = torch.tensor([[0, 1, 2, 3, 0, 5, 6, 7]] * 4, dtype=torch.uint8)
    assert dtype_bits(torch.uint4) == 4 and dtype_bits(torch.int4) == 4 and dtype_bits(torch.uint1) == 1
    weight = raw.view(torch.uint4)
    assert count_nonzero(weight) == 24
    assert measure(weight).block == (4, 1)  # columns 0 and 4 of all 4 rows


def test_uint4_linear_audits_at_4_bits():
    model = nn.Linear(8, 4, bias=False)
    raw = torch.tensor([[0, 1, 2, 3, 0, 5, 6, 7]] * 4, dtype=torch.uint8)
    model.weight = nn.Parameter(raw.view(torch.uint4), requires_grad=False)
    r = micronet.audit(nn.Sequential(model), (1, 8), input_dtype="float32", freebie=False)
    record, cost = next((rec, c) for rec, c in r.layers if rec.name == "0")
    assert record.weight_bits == 4 and record.weight_nonzero == 24
    assert cost.storage == 24 * 4 / 32 + 8 / 32  # 8 blocks of 4 x 1, one bit each


class Fp8Gemm(nn.Module):
    """x [16, 8] -> float8 -> _scaled_mm with a float8 [8, 6] operand and scalar scales."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.ones(6, 8).to(torch.float8_e4m3fn))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        return torch._scaled_mm(x.to(torch.float8_e4m3fn), self.w.t(), self.scale, self.scale,
                                out_dtype=torch.float32)


def test_scaled_mm_is_a_product_at_its_float8_operands_bits():
    r = micronet.audit(Fp8Gemm(), (16, 8), input_dtype="float32", freebie=False)
    assert not r.uncounted
    record, cost = next((rec, c) for rec, c in r.layers if rec.op == "scaled_mm")
    assert record.input_bits == 8
    # 16 x 6 outputs, each a dot product of 8 terms; scale_a * scale_b once, then one mult per output
    assert (record.counts.dot_products, record.counts.dot_length) == (96, 8)
    assert cost.mults == 96 * 8 + 96 + 1 and cost.adds == 96 * 7
    assert cost.mult_bits == 8 and cost.add_bits == 32  # adds at the accumulator's width
    assert cost.ops == (96 * 8 + 97) * 8 / 32 + 96 * 7


def test_scaled_mm_rowwise_scales_bias_and_scale_result():
    from micronet.counters import matmul
    from micronet.records import TensorInfo
    from micronet.registry import OpCall

    f8 = torch.float8_e4m3fn
    a, b = TensorInfo((4, 8), f8), TensorInfo((8, 3), f8)
    rows, cols, bias = TensorInfo((4, 1), torch.float32), TensorInfo((1, 3), torch.float32), TensorInfo((3,), torch.bfloat16)
    call = OpCall("aten", torch.ops.aten._scaled_mm.default, (a, b, rows, cols, bias, TensorInfo((), torch.float32)),
                  out=TensorInfo((4, 3), f8))
    counts = matmul.scaled_mm(call)
    assert (counts.dot_products, counts.dot_length) == (12, 8)
    assert (counts.mults, counts.adds) == (2 * 12 + 12, 12)  # two scales and scale_result per output; bias
