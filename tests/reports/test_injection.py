"""Hostile names from the model: escapes never reach the terminal raw, and
spreadsheet formulas never reach a CSV cell unquoted."""
import csv
import dataclasses
import io
import unicodedata
import warnings

import pytest
import torch
from torch import nn

import micronet
from micronet.reports import render_csv, render_table
from micronet.reports.csv_report import defuse
from micronet.reports.sections import ReportSection
from micronet.text import printable

FORMULA = '=HYPERLINK("http://x")'
TITLE = "\x1b]0;pwned\x07evil"  # xterm: set the window title
BIDI = "rlo\u202eexe_txt\u2028next"  # right-to-left override, line separator
SPOOF = "\rx\x1b[2J\x9b1m\u2066i\u2069\u2029"  # CR, CSI as ESC [ and as C1, isolates


class Odd(nn.Module):
    """Calls an op without a counter, so the UNCOUNTED line names its path."""

    def forward(self, x):
        return torch.special.i0(x)


class Hostile(nn.Module):
    """Layers whose names (allowed by add_module: anything without a dot) hold
    a formula, terminal escapes, bidi overrides and line breaks."""

    def __init__(self):
        super().__init__()
        self.add_module(FORMULA, nn.Conv2d(3, 4, 3))
        self.add_module(TITLE, nn.ReLU())
        self.add_module(BIDI, nn.Conv2d(4, 4, 1))
        self.add_module(SPOOF, Odd())
        self.add_module("+sum", nn.Flatten())
        self.add_module("@at", nn.Linear(4 * 6 * 6, 10))

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


Hostile.__name__ = Hostile.__qualname__ = "Net\x1b[8m\nhidden"


def _raw_controls(text: str) -> list[str]:
    """Characters a terminal would act on or reorder: controls, format
    characters (bidi), line and paragraph separators; the table's own line
    breaks aside."""
    return [c for c in text.replace("\n", "")
            if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")]


@pytest.fixture(scope="module")
def result():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", micronet.UncountedWarning)
        audited = micronet.audit(Hostile(), (1, 3, 8, 8))
    return dataclasses.replace(audited, warnings=audited.warnings + (f"layer {TITLE} is odd\nreally",))


def test_the_hostile_names_reach_the_records(result):
    names = {row["name"] for row in result.rows()}
    assert {FORMULA, TITLE, BIDI, "+sum", "@at"} <= names
    assert any(name.startswith(SPOOF) for name in names)  # the uncounted function node under Odd


def test_the_terminal_table_shows_every_control_as_an_escape(result):
    section = ReportSection("evil", "Evil\x1b[1mtitle", lambda r: [(f"{BIDI}", f"value\r{TITLE}")])
    table = render_table(result, show_free=True, sections={"evil": section})
    assert _raw_controls(table) == []
    lines = table.splitlines()
    assert sum(line.startswith("\\x1b]0;pwned\\x07evil ") for line in lines) == 1  # one line, escaped
    assert any(line.startswith("rlo\\u202eexe_txt\\u2028next ") for line in lines)
    assert any(line.startswith("\\rx\\x1b[2J\\x9b1m\\u2066i\\u2069\\u2029.special_i0 ") for line in lines)
    assert "model      Net\\x1b[8m\\nhidden   input 1x3x8x8" in table
    assert any(line.startswith("UNCOUNTED  1 node(s): \\rx\\x1b[2J") for line in lines)
    assert "warning    layer \\x1b]0;pwned\\x07evil is odd\\nreally" in lines
    assert "Evil\\x1b[1mtitle" in lines and f"  {printable(BIDI)}: value\\r{printable(TITLE)}" in lines


def test_table_columns_stay_aligned_with_escaped_names(result):
    lines = render_table(result, show_free=True).splitlines()
    rows = lines[:lines.index("")]
    assert len({len(line.rstrip()) for line in rows[:2]}) == 1  # header and rule
    op_column = rows[0].index("op")
    assert all(line[op_column - 2:op_column] == "  " for line in rows)


def test_csv_cells_that_a_spreadsheet_would_evaluate_start_with_a_quote(result):
    text = render_csv(result)
    rows = list(csv.reader(io.StringIO(text)))
    names = [row[0] for row in rows[1:]]
    assert "'" + FORMULA in names and "'+sum" in names and "'@at" in names
    assert TITLE in names and BIDI in names  # other text is kept as it is: CSV is data
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "@", "\t", "\r")), cell
            if cell.startswith("-"):  # only numbers may start with a minus
                float(cell)


def test_defuse_leaves_numbers_alone():
    assert defuse(-3) == -3 and defuse(-0.5) == -0.5 and defuse(0) == 0
    assert defuse("-x") == "'-x" and defuse("=1+1") == "'=1+1" and defuse("\tx") == "'\tx"
    assert defuse("\rx") == "'\rx" and defuse("@SUM(A1)") == "'@SUM(A1)"
    assert defuse("conv") == "conv" and defuse("1x3x8x8") == "1x3x8x8" and defuse("") == ""


@pytest.mark.parametrize("raw, shown", [
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
    ("a\nb\rc\td", "a\\nb\\rc\\td"),
    ("\u2028\u2029", "\\u2028\\u2029"),
    ("".join(map(chr, range(0x202a, 0x202f))), "\\u202a\\u202b\\u202c\\u202d\\u202e"),
    ("".join(map(chr, range(0x2066, 0x206a))), "\\u2066\\u2067\\u2068\\u2069"),
    ("\x00\x7f\x85\x9b", "\\x00\\x7f\\x85\\x9b"),  # C0, DEL, C1
    ("café 名前 \\path", "café 名前 \\path"),  # printable text and backslashes as they are
])
def test_printable(raw, shown):
    assert printable(raw) == shown
    assert printable(shown) == shown
    assert _raw_controls(printable(raw)) == []


def test_every_control_and_format_character_is_escaped():
    hostile = "".join(chr(c) for c in range(0x2100) if unicodedata.category(chr(c)) in ("Cc", "Cf", "Zl", "Zp"))
    assert _raw_controls(printable(hostile) + "\n") == []
