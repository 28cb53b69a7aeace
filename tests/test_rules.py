"""The micronet-2019 rulebook's arithmetic on hand-made records (closed forms)."""
import pytest

from micronet.records import COUNTED, Counts, LayerRecord
from micronet.rules import CIFAR100, IMAGENET, MICRONET_2019, ScoreOptions


def conv_record(name="conv", *, e=100, length=27, weight=270, nonzero=270, block=(), bias=0,
                wbits=32, ibits=32, acc=32):
    """A conv-like record: e outputs, dot length `length`, `weight` weight elements."""
    return LayerRecord(
        name=name, node=name, op="conv2d", status=COUNTED, target="nn.Conv2d", module_path="",
        input_shapes=((1, 3, 8, 8),), output_shapes=((1, 10, 10),),
        counts=Counts(dot_products=e, dot_length=length, sparse_weight=True, adds=e if bias else 0),
        params=weight + bias, nonzero_params=nonzero + bias, weight_params=weight,
        weight_nonzero=nonzero, weight_block=block if nonzero < weight else (),
        weight_bits=wbits, input_bits=ibits, accumulator_bits=acc,
    )


def plain_record(name, *, params=0, mults=0, adds=0, other=0, folded=0, wbits=32, ibits=32):
    return LayerRecord(name=name, node=name, op="x", status=COUNTED, target="x", module_path="",
                       input_shapes=(), output_shapes=(),
                       counts=Counts(mults=mults, adds=adds, other_ops=other, folded_params=folded),
                       params=params, nonzero_params=params, weight_bits=wbits, input_bits=ibits)


def score(records, track=CIFAR100, **options):
    return MICRONET_2019.score(records, track, ScoreOptions(**options))


def test_dense_conv_without_freebie_counts_every_op_at_full_cost():
    s = score([conv_record(bias=10)], freebie=False)
    layer = s.layers[0]
    assert layer.mults == 100 * 27  # 100 outputs x 27 terms
    assert layer.adds == 100 * 26 + 100  # (L-1) per output + the bias add
    assert layer.ops == 2700 + 2700
    assert layer.storage == 270 + 10
    assert s.score.total == pytest.approx(280 / 36.5e6 + 5400 / 10.49e9)


def test_freebie_halves_params_and_mults_but_not_adds():
    s = score([conv_record(bias=10)], freebie=True)
    layer = s.layers[0]
    assert s.score.freebie
    assert layer.storage == 280 * 16 / 32
    assert layer.ops == 2700 * 16 / 32 + 2700  # adds stay at 32 bits
    assert layer.param_bits == 16 and layer.mult_bits == 16 and layer.add_bits == 32


def test_quantizing_below_16_bits_loses_the_freebie_everywhere():
    records = [conv_record("a", wbits=8), conv_record("b")]
    s = score(records, freebie=True)
    assert not s.score.freebie
    a, b = s.layers
    assert a.storage == 270 * 8 / 32
    assert a.mult_bits == 32  # 8-bit weights x 32-bit activations: the widest input
    assert b.storage == 270 and b.mult_bits == 32


def test_mults_take_the_widest_input_and_adds_the_accumulator():
    s = score([conv_record(wbits=3, ibits=5, acc=16)])
    layer = s.layers[0]
    assert layer.mult_bits == 5  # 3-bit x 5-bit = 5/32
    assert layer.ops == 2700 * 5 / 32 + 2600 * 16 / 32


def test_unstructured_sparsity_reduces_dot_products_and_charges_a_bitmask():
    s = score([conv_record(nonzero=135, block=(1,))], freebie=False)
    layer = s.layers[0]
    assert layer.mults == 100 * 13.5  # L = 27 * (1 - 0.5)
    assert layer.adds == 100 * 12.5
    assert layer.storage == 135 + 270 / 32  # nonzeros + 1 bit per element


def test_block_sparsity_charges_one_bit_per_block():
    s = score([conv_record(weight=256, length=256, nonzero=128, block=(1, 4))], freebie=False)
    assert s.layers[0].storage == 128 + (256 / 4) / 32


def test_barely_sparse_weight_is_stored_dense():
    # one zero in 270: the bitmask (270/32) costs more than the zero saves
    s = score([conv_record(nonzero=269, block=(1,))], freebie=False)
    assert s.layers[0].storage == 270


def test_batchnorm_scale_is_free_and_its_bias_counted():
    s = score([plain_record("bn", params=128, adds=6400, folded=64)], freebie=False)
    assert s.layers[0].storage == 64
    assert s.layers[0].ops == 6400


def test_transcendental_ops_cost_one_each_at_any_precision():
    s = score([plain_record("exp", other=1000, ibits=8)], freebie=True)
    assert s.layers[0].ops == 1000


def test_published_example_scores_0_862_on_imagenet():
    # the challenge site's example: 3M params and 500M ops on ImageNet
    records = [plain_record("params", params=3_000_000), plain_record("ops", adds=500_000_000)]
    s = score(records, IMAGENET, freebie=False)
    assert s.score.total == pytest.approx(3 / 6.9 + 500 / 1170)
    assert round(s.score.total, 3) == 0.862


def test_what_if_options_override_measured_bits_and_sparsity():
    record = conv_record()
    s = score([record], weight_bits=8, act_bits=8, sparsity=0.5)
    layer = s.layers[0]
    assert not s.score.freebie
    assert layer.storage == 135 * 8 / 32 + 270 / 32
    assert layer.mults == 1350 and layer.mult_bits == 8


def test_totals_add_up():
    records = [conv_record("a", bias=10), plain_record("relu", mults=100), plain_record("exp", other=7)]
    s = score(records, freebie=False)
    assert s.totals["mults"] == 2700 + 100
    assert s.totals["adds"] == 2600 + 100
    assert s.totals["ops"] == pytest.approx(sum(l.ops for l in s.layers))
    assert s.totals["params"] == 280
    assert s.totals["macs"] == 2700


def test_rank_among_published_results():
    assert CIFAR100.rank(0.004) == 1
    assert CIFAR100.rank(0.0055) == 3  # between 0.0054 and 0.0056
    assert IMAGENET.rank(0.5) == 5


def test_layer_macs_come_from_the_rulebook_after_sparsity():
    records = [conv_record("dense"), conv_record("sparse", nonzero=135, block=(1,)),
               plain_record("relu", mults=100)]
    s = score(records, freebie=False)
    assert [l.macs for l in s.layers] == [100 * 27, 100 * 27 * 0.5, 0]  # half the weights: half the MACs
    assert s.totals["macs"] == sum(l.macs for l in s.layers) == 2700 + 1350
    assert score(records, sparsity=0.9).layers[0].macs == pytest.approx(100 * 27 * 0.1)


def test_the_track_says_whether_an_accuracy_meets_its_bar():
    assert CIFAR100.meets_bar(80.0) is True  # the bar is top-1 >= 80%
    assert CIFAR100.meets_bar(79.99) is False
    assert CIFAR100.meets_bar(None) is None  # not measured


def test_a_layers_share_of_the_score_splits_into_storage_and_ops_parts():
    # the conv: 270 weights, 2700 mults + 2600 adds = 5300 ops; the other record the same
    s = score([conv_record("a"), plain_record("b", params=270, adds=5300)], freebie=False).score
    storage, ops = s.parts(270, 5300)  # half the storage and half the ops: half of each term
    assert storage == pytest.approx(s.storage_term / 2 / s.total)
    assert ops == pytest.approx(s.ops_term / 2 / s.total)
    assert s.share(270, 5300) == pytest.approx(0.5)


def test_per_layer_act_bits_price_each_records_multiplies():
    # a: conv, 100 outputs x 27 terms, 8-bit weights; b: the same at 32 bits; relu: 100 multiplies
    records = [conv_record("a", wbits=8), conv_record("b"), plain_record("relu", mults=100)]
    s = score(records, freebie=False, layer_act_bits=(4, 8, 8))
    a, b, relu = s.layers
    assert a.mult_bits == 8 and a.ops == 2700 * 8 / 32 + 2600  # max(8 weight, 4 act) = 8; adds at 32
    assert b.mult_bits == 32 and b.ops == 2700 + 2600  # 32-bit weights: the widest input stays 32
    assert relu.mult_bits == 8 and relu.ops == 100 * 8 / 32  # no weight: the input alone
    # None keeps the measured input (here 16); the per-layer value wins over the uniform one
    kept = score([conv_record("a", wbits=4, ibits=16)], freebie=False, act_bits=8, layer_act_bits=(None,))
    assert kept.layers[0].mult_bits == 8
    over = score([conv_record("a", wbits=4, ibits=16)], freebie=False, act_bits=8, layer_act_bits=(2,))
    assert over.layers[0].mult_bits == 4 and over.layers[0].ops == 2700 * 4 / 32 + 2600
    # an 8-bit input anywhere loses the freebie, as an 8-bit weight does
    assert score([conv_record("a"), conv_record("b")], layer_act_bits=(None, 8)).score.freebie is False
    assert score([conv_record("a"), conv_record("b")], layer_act_bits=(None, 16)).score.freebie is True


def test_lab4_takes_qa_over_the_per_layer_act_bits():
    from micronet.plugins.imta import IMTA_LAB4

    # w = 540 params at 8 bits, f = 2 x 2700 MACs; qa is the widest input of a record that computes
    records = [conv_record("a", wbits=8), conv_record("b", wbits=8)]
    track = CIFAR100

    def total(**options):
        return IMTA_LAB4.score(records, track, ScoreOptions(**options)).score.total

    w, f = 540, 5400
    assert total() == pytest.approx((8 / 32) * w / 5.6e6 + (32 / 32) * f / 2.8e8)  # inputs measured at 32
    assert total(layer_act_bits=(4, 4)) == pytest.approx((8 / 32) * w / 5.6e6 + (8 / 32) * f / 2.8e8)
    assert total(layer_act_bits=(4, None)) == total()  # b's input still 32: the widest
    assert total(act_bits=4, layer_act_bits=(16, None)) == pytest.approx((8 / 32) * w / 5.6e6 + (16 / 32) * f / 2.8e8)


def test_a_tied_projection_with_a_bias_stores_the_shared_weight_once():
    # an output Linear reading the embedding's weight and owning only its bias: weight once, bias counted
    from torch import nn

    import micronet

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 50)
            self.head.weight = self.embed.weight

        def forward(self, ids):
            return self.head(self.embed(ids))

    result = micronet.audit(Tied(), (1, 3), track="cifar100", freebie=False)
    assert result.totals["params"] == 50 * 8 + 50  # the table once, the bias once
    assert result.score.storage == 50 * 8 + 50
    head = next(r for r in result.records if r.name == "head")
    assert head.params == 50 and head.owns_weight is False
    assert result.totals["macs"] == 3 * 8 * 50  # the projection is still computed
