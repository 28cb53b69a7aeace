"""Several inputs for one forward: API forms, CLI --input / --inputs, records and errors.

Figures are hand-computed. ``TwoIn`` with batch 2: ``a = Linear(4, 3)`` costs
2*4*3 = 24 MACs (15 params), ``b = Linear(6, 3)`` 2*6*3 = 36 MACs (21 params),
the elementwise ``u * v`` 2*3 = 6 multiplications; ``cat`` is free. Totals:
60 MACs, 66 multiplications, 36 params.
"""
import json

import pytest
import torch
from torch import nn

import micronet
from micronet.cli import main
from micronet.errors import UsageError
from micronet.inputs import InputSpec, normalise, parse_input

MODELS = '''
import torch
from torch import nn


class TwoIn(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 3)
        self.b = nn.Linear(6, 3)

    def forward(self, x, y):
        u, v = self.a(x), self.b(y)
        return torch.cat([u * v, u], dim=1)


class Tok(nn.Module):
    """Token ids (int64) through an embedding, an optional float mask."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, ids, mask=None):
        h = self.emb(ids)
        if mask is not None:
            h = h * mask.unsqueeze(-1)
        return self.fc(h)


def two():
    return TwoIn()


def tok():
    return Tok()


def make_inputs():
    return {"y": torch.empty(2, 6, device="meta"), "x": (2, 4)}
'''

namespace: dict = {}
exec(compile(MODELS, "models", "exec"), namespace)
TwoIn, Tok = namespace["TwoIn"], namespace["Tok"]


def by_name(result):
    return {row["name"]: row for row in result.rows()}


def check_two(result):
    rows = by_name(result)
    assert (rows["a"]["macs"], rows["a"]["params"], rows["a"]["input_shapes"]) == (24, 15, [[2, 4]])
    assert (rows["b"]["macs"], rows["b"]["params"], rows["b"]["input_shapes"]) == (36, 21, [[2, 6]])
    assert (rows["mul"]["mults"], rows["cat"]["status"]) == (6, "free")
    assert (result.totals["macs"], result.totals["mults"], result.totals["params"]) == (60, 66, 36)
    assert result.input_shape == (2, 4)
    assert [i.to_dict() for i in result.inputs] == [{"name": "x", "shape": [2, 4], "dtype": "float32"},
                                                    {"name": "y", "shape": [2, 6], "dtype": "float32"}]


@pytest.mark.parametrize("inputs", [
    ((2, 4), (2, 6)),                                            # a tuple of shapes
    ["2x4", "2x6"],                                              # shape texts
    {"y": (2, 6), "x": (2, 4)},                                  # keywords, any order
    (((2, 4), torch.float32), ((2, 6), "float32")),              # (shape, dtype) pairs
    (torch.empty(2, 4, device="meta"), torch.empty(2, 6, device="meta")),  # tensors: shape and dtype only
])
def test_two_inputs_through_the_api(inputs):
    check_two(micronet.audit(TwoIn(), inputs=inputs))


def test_token_ids_and_a_keyword_mask():
    result = micronet.audit(Tok(), inputs={"ids": ((1, 5), "int64"), "mask": ((1, 5), torch.float32)})
    rows = by_name(result)
    assert rows["emb"]["params"] == 100 * 8 and rows["emb"]["input_shapes"] == [[1, 5]]
    assert rows["mul"]["mults"] == 5 * 8 and rows["fc"]["macs"] == 5 * 8 * 2
    assert [i.to_dict() for i in result.inputs] == [{"name": "ids", "shape": [1, 5], "dtype": "int64"},
                                                    {"name": "mask", "shape": [1, 5], "dtype": "float32"}]
    assert result.input_text == "ids 1x5 int64, mask 1x5"
    from micronet.reports import render_table
    from micronet.reports.html import render_audit_html

    assert "input ids 1x5 int64, mask 1x5 " in render_table(result)  # the header names every input
    assert "input ids 1x5 int64, mask 1x5 · captured with" in render_audit_html(result)
    # without the mask the default (None) branch is traced: no multiplication
    alone = micronet.audit(Tok(), (1, 5))
    assert "mul" not in by_name(alone) and alone.totals["mults"] == 5 * 8 * 2
    assert [i.to_dict() for i in alone.inputs] == [{"name": "ids", "shape": [1, 5], "dtype": "int64"}]


def test_a_gap_before_a_keyword_input_goes_through_torch_export_too():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 3)

        def forward(self, x, y=None, z=None):
            for _ in range(int(x.shape[0])):  # fx cannot make an int of a proxy: export captures it
                pass
            return self.a(x) * z

    result = micronet.audit(Untraceable(), inputs={"x": (2, 4), "z": (2, 3)})
    assert result.captured_via == "export"
    assert result.totals["macs"] == 24 and result.totals["mults"] == 24 + 6


def test_one_input_keeps_its_record():
    result = micronet.audit(nn.Linear(4, 3), (2, 4))
    assert result.input_shape == (2, 4) and result.input_text == "2x4"
    assert result.to_dict()["inputs"] == [{"name": "input", "shape": [2, 4], "dtype": "float32"}]


def test_parse_input_and_normalise():
    assert parse_input("attention_mask=1x128:int64") == InputSpec("attention_mask", (1, 128), torch.int64)
    assert parse_input("1x3x8x8") == InputSpec(None, (1, 3, 8, 8))
    assert normalise((1, 4)) == (InputSpec(None, (1, 4)),)
    assert normalise(((1, 4), "int64")) == (InputSpec(None, (1, 4), torch.int64),)
    assert normalise({"m": "1x2:bool"}) == (InputSpec("m", (1, 2), torch.bool),)


@pytest.mark.parametrize("kwargs, message", [
    ({"inputs": {"x": (2, 4), "w": (2, 6)}}, "TwoIn.forward has no parameter 'w'; its parameters: x, y"),
    ({"inputs": {"x": ((2, 4), "complex"), "y": (2, 6)}}, "input dtype 'complex' is not one of"),
    ({"inputs": ((2, 0), (2, 6))}, "every size must be a positive integer"),
    ({"inputs": ((2, 4),)}, "TwoIn.forward needs 2 inputs (x, y); an audit calls it with one tensor"),
    ({"inputs": ((2, 4), (2, 6), (2, 1))}, "3 positional inputs given, TwoIn.forward takes 2 (x, y)"),
    ({"inputs": ((2, 4), 1)}, "not a shape"),
    ({"inputs": ((2, 4), (2, 6)), "input_shape": (2, 4)}, "input_shape (one input) or inputs (several), not both"),
])
def test_api_errors_are_usage_errors(kwargs, message):
    with pytest.raises(UsageError) as info:
        micronet.audit(TwoIn(), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_missing_input_is_named():
    with pytest.raises(UsageError, match=r"TwoIn.forward needs 2 inputs \(x, y\); 1 \(y\) given, missing x"):
        micronet.audit(TwoIn(), inputs={"y": (2, 6)})


def test_a_name_given_twice():
    with pytest.raises(UsageError, match="input 'x' is given twice"):
        micronet.audit(TwoIn(), inputs=((2, 4), InputSpec("x", (2, 4))))


# ------------------------------------------------------------------ command line

def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture()
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return path


@pytest.mark.parametrize("argv", [
    ["--input", "2x4", "--input", "2x6"],
    ["--input", "y=2x6:float32", "--input", "x=2x4"],
    ["--input", "2x4", "--input", "y=2x6"],
])
def test_cli_two_inputs(capsys, models, tmp_path, argv):
    code, out, err = run(capsys, "audit", f"{models}:two", *argv, "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["inputs"] == [{"name": "x", "shape": [2, 4], "dtype": "float32"},
                             {"name": "y", "shape": [2, 6], "dtype": "float32"}]
    assert doc["input_shape"] == [2, 4]
    assert (doc["totals"]["macs"], doc["totals"]["mults"], doc["totals"]["params"]) == (60, 66, 36)


def test_cli_token_ids(capsys, models, tmp_path):
    code, out, err = run(capsys, "audit", f"{models}:tok", "--input", "ids=1x5:int64", "--input",
                         "mask=1x5:float32", "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [i["dtype"] for i in doc["inputs"]] == ["int64", "float32"]
    assert (doc["totals"]["macs"], doc["totals"]["mults"]) == (80, 120)


def test_cli_inputs_from_a_trusted_function(capsys, models, tmp_path):
    code, out, err = run(capsys, "audit", f"{models}:two", "--inputs", f"{models}:make_inputs", "--trust",
                         "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [i["shape"] for i in doc["inputs"]] == [[2, 4], [2, 6]] and doc["totals"]["macs"] == 60


@pytest.mark.parametrize("argv, message", [
    (["--input", "x=2x4", "--input", "w=2x6"], "has no parameter 'w'"),
    (["--input", "x=2x4:complex", "--input", "y=2x6"], "input dtype 'complex'"),
    (["--input", "2x4", "--input", "2xfoo"], "input shape '2xfoo'"),
    (["--input", "2x4", "--input", "2x6:"], "nothing after ':'"),
    (["--input", "2x4"], "needs 2 inputs (x, y)"),
    (["--inputs", "MODELS:make_inputs"], "would run code from that file (hint: pass --trust"),
    (["--inputs", "MODELS:make_inputs", "--input", "2x4", "--trust"], "--input or --inputs, not both"),
])
def test_cli_errors_are_one_line_with_exit_code_2(capsys, models, argv, message):
    argv = [a.replace("MODELS", str(models)) for a in argv]
    code, out, err = run(capsys, "audit", f"{models}:two", *argv)
    assert code == 2, err
    assert err.startswith("micronet: error:") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_one_input_with_a_dtype_on_a_forward_of_star_args(capsys, tmp_path):
    """One positional input stays today's one tensor, even for ``forward(*args)``,
    and its dtype is the one written: 1x5 token ids through Embedding(100, 8)
    then Linear(8, 2) cost 5*8*2 = 80 MACs."""
    (tmp_path / "star.py").write_text(
        "from torch import nn\n"
        "class Star(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.emb, self.fc = nn.Embedding(100, 8), nn.Linear(8, 2)\n"
        "    def forward(self, *args):\n"
        "        return self.fc(self.emb(args[0]))\n")
    code, out, err = run(capsys, "audit", f"{tmp_path / 'star.py'}:Star", "--input", "1x5:int64",
                         "--json", str(tmp_path / "r.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["inputs"] == [{"name": "args", "shape": [1, 5], "dtype": "int64"}] and doc["totals"]["macs"] == 80
