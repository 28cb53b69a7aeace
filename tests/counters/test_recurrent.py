"""LSTM / GRU (and cells) by closed form, against hand arithmetic."""
from __future__ import annotations

import torch
from torch import nn

import micronet
from micronet.counters import recurrent
from micronet.records import TensorInfo
from micronet.registry import OpCall


def call(module, *shape) -> OpCall:
    return OpCall("module", type(module), (TensorInfo(tuple(shape), torch.float32),), module=module)


def test_lstm_two_layer_bidirectional_by_hand():
    # input 3, hidden 4, 2 layers, 2 directions, 5 steps, batch 1
    m = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    counts = recurrent.lstm(call(m, 5, 1, 3))
    # one step, one direction, H = 4: layer 0 has I = 3, layer 1 has I = 2 * 4 = 8
    # layer 0: gates 16 dot products of 3 + 4 = 7 terms: 112 MACs
    #   mults 112 + 3*4 sigmoids * 2 (24) + c update 8 + o*tanh(c) 4 = 148
    #   adds 16 * 6 = 96 + biases 2 * 16 = 32 + sigmoids 12 + c update 4 = 144; tanh 8
    # layer 1: 16 dot products of 8 + 4 = 12 terms: 192 MACs
    #   mults 192 + 24 + 8 + 4 = 228; adds 16 * 11 = 176 + 32 + 12 + 4 = 224; tanh 8
    steps_dirs = 5 * 2
    assert counts.mults == steps_dirs * (148 + 228) == 3760
    assert counts.adds == steps_dirs * (144 + 224) == 3680
    assert counts.other_ops == steps_dirs * (8 + 8) == 160
    assert counts.macs == steps_dirs * (112 + 192) == 3040


def test_lstm_batch_first_batch_and_no_bias():
    m = nn.LSTM(3, 4, bias=False, batch_first=True)
    counts = recurrent.lstm(call(m, 2, 5, 3))  # N = 2, T = 5
    # per step: mults 112 + 36 = 148; adds 96 + 12 + 4 = 112 (no bias adds)
    assert (counts.mults, counts.adds, counts.other_ops) == (10 * 148, 10 * 112, 10 * 8)


def test_lstm_projection_adds_its_product():
    m = nn.LSTM(3, 4, proj_size=2)
    counts = recurrent.lstm(call(m, 1, 1, 3))
    # gates: 16 dot products of 3 + 2 = 5 terms (80 MACs); projection 2 x 4 (8 MACs)
    # mults 80 + 24 + 8 + 4 + 8 = 124; adds 16 * 4 + 32 + 12 + 4 + 2 * 3 = 118
    assert (counts.mults, counts.adds, counts.macs) == (124, 118, 88)


def test_gru_by_hand():
    m = nn.GRU(3, 4, num_layers=2)
    counts = recurrent.gru(call(m, 3, 1, 3))  # T = 3, batch 1
    # layer 0 (I = 3, H = 4): 12 dot products of 7 terms: 84 MACs
    #   mults 84 + r*(W_hn h + b_hn) 4 + sigmoids 2*8 = 16 + (1-z)*n, z*h 8 = 112
    #   adds: r, z 8*6 = 48; W_in x 4*2 = 8; W_hn h 4*3 = 12; joining 4; biases 6*4 = 24;
    #         sigmoids 8; 1 - z and the sum 8: 112; tanh 4
    # layer 1 (I = 4): 12 dot products of 8 terms: 96 MACs
    #   mults 96 + 4 + 16 + 8 = 124; adds 8*7 + 4*3 + 4*3 + 4 + 24 + 8 + 8 = 124; tanh 4
    assert counts.mults == 3 * (112 + 124)
    assert counts.adds == 3 * (112 + 124)
    assert counts.other_ops == 3 * 8
    assert counts.macs == 3 * (84 + 96)


def test_cells_by_hand():
    lstm = recurrent.lstm_cell(call(nn.LSTMCell(3, 4), 2, 3))  # batch 2
    assert (lstm.mults, lstm.adds, lstm.other_ops) == (2 * 148, 2 * 144, 2 * 8)
    gru = recurrent.gru_cell(call(nn.GRUCell(3, 4), 3))  # unbatched
    assert (gru.mults, gru.adds, gru.other_ops) == (112, 112, 4)


class Tagger(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        self.cell = nn.GRUCell(8, 4)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.cell(y[-1])


def test_audit_counts_recurrent_modules_by_closed_form():
    r = micronet.audit(Tagger(), (5, 1, 3), input_dtype="float32", freebie=False)
    rnn = next(rec for rec in r.records if rec.name == "rnn")
    assert rnn.status == "counted" and rnn.rule.endswith("recurrent:lstm")
    assert (rnn.counts.mults, rnn.counts.adds, rnn.counts.other_ops) == (3760, 3680, 160)
    cell = next(rec for rec in r.records if rec.name == "cell")
    # GRUCell(8, 4), batch 1: 12 dot products of 12 terms (144 MACs); mults 144 + 28 = 172;
    # adds 144 + 4 + 24 = 172; tanh 4
    assert (cell.counts.mults, cell.counts.adds, cell.counts.other_ops) == (172, 172, 4)
    assert rnn.params == sum(p.numel() for p in Tagger().rnn.parameters())


class BiLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(3, 4, num_layers=2, bidirectional=True)

    def forward(self, x):
        return self.rnn(x)[0]


def test_export_path_counts_aten_lstm_from_its_weights(tmp_path):
    path = tmp_path / "lstm.pt2"
    torch.export.save(torch.export.export(BiLSTM(), (torch.randn(5, 1, 3),)), str(path))
    r = micronet.audit(str(path), (5, 1, 3), trust=True, freebie=False)
    rnn = next(rec for rec in r.records if rec.name == "rnn")
    assert rnn.status == "counted"
    assert (rnn.counts.mults, rnn.counts.adds, rnn.counts.other_ops) == (3760, 3680, 160)  # as by hand above


def test_aten_forms_by_hand():
    f = torch.float32

    def t(*shape):
        return TensorInfo(shape, f)

    # aten.gru.data: a PackedSequence of 7 rows (e.g. lengths 4 and 3), GRU(3, 4), one layer, with biases
    params = [t(12, 3), t(12, 4), t(12), t(12)]
    packed = OpCall("aten", torch.ops.aten.gru.data,
                    (t(7, 3), TensorInfo((4,), torch.int64), t(1, 2, 4), params, True, 1, 0.0, False, False))
    assert recurrent.gru_aten(packed).mults == 7 * 112  # 112 mults per row and step, as by hand above
    # aten.lstm.input with a projection (proj_size 2): w_hh is [16, 2]
    lstm = OpCall("aten", torch.ops.aten.lstm.input,
                  (t(1, 1, 3), [t(1, 1, 2), t(1, 1, 4)], [t(16, 3), t(16, 2), t(16), t(16), t(2, 4)],
                   True, 1, 0.0, False, False, False))
    assert (recurrent.lstm_aten(lstm).mults, recurrent.lstm_aten(lstm).adds) == (124, 118)
    cell = OpCall("aten", torch.ops.aten.lstm_cell.default, (t(2, 3), [t(2, 4), t(2, 4)], t(16, 3), t(16, 4)))
    assert recurrent.lstm_cell_aten(cell).adds == 2 * (144 - 32)  # no biases: 32 fewer adds a row
    gru = OpCall("aten", torch.ops.aten.gru_cell.default, (t(3), t(4), t(12, 3), t(12, 4), t(12), t(12)))
    assert recurrent.gru_cell_aten(gru).adds == 112

