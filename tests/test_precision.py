"""Bit-width overrides: parsing, matching, errors."""
import pytest
import torch

from micronet.errors import UsageError
from micronet.precision import BitOverride, Precision, dtype_bits, parse_bits


def test_parse_bits_accepts_globs_and_commas():
    assert parse_bits(["features.*=8", "classifier.1=16,*.conv=4"]) == (
        BitOverride("features.*", 8), BitOverride("classifier.1", 16), BitOverride("*.conv", 4))


@pytest.mark.parametrize("text", ["features.*", "=8", "a=eight", "a=0", "a=65", "a=-3", "a=8.5"])
def test_bad_bits_are_usage_errors(text):
    with pytest.raises(UsageError, match="--bits"):
        parse_bits([text])


def test_last_matching_override_wins_and_overrides_beat_what_the_model_declares():
    p = Precision(weight_overrides=parse_bits(["*=8", "features.0=16"]))
    assert p.weight_bits("features.0", {}, torch.float32) == 16
    assert p.weight_bits("features.1", {}, torch.float32) == 8
    assert p.weight_bits("features.1", {"weight": 4}, torch.float32) == 8  # the user asked by name
    assert Precision().weight_bits("features.1", {"weight": 4}, torch.float32) == 4  # else the model's
    assert Precision().input_bits("x", {"input": 6}, torch.float32) == 6
    assert Precision(accumulator_bits=24).acc_bits({"accumulator": 16}) == 16
    assert Precision(accumulator_bits=24).acc_bits({}) == 24


def test_dtypes_give_their_bits():
    assert dtype_bits(torch.float16) == dtype_bits(torch.bfloat16) == 16
    assert dtype_bits(torch.qint8) == 8 and dtype_bits(torch.float32) == 32
    p = Precision()
    assert p.input_bits("x", {}, torch.float16) == 16
    assert p.input_bits("x", {}, torch.int64) == 32  # indices are not activations


def test_unmatched_patterns_are_reported():
    p = Precision(weight_overrides=parse_bits(["features.*=8", "nothing.*=4"]))
    assert p.unmatched(["features.0", "fc"]) == ["nothing.*"]
