"""micronet diff (issue 15): two audits of models counted by hand, renames,
history.json entries, the JSON and HTML outputs and --fail-above-delta."""
import json
import re
from collections import OrderedDict

import pytest
from torch import nn

import micronet
from micronet.cli import main
from micronet.diff import diff_audits, load_audit, parse_delta
from micronet.errors import UsageError
from micronet.reports import write_json

R_PARAMS, R_OPS = 36.5e6, 10.49e9  # cifar100's reference constants


def mlp(width: int) -> nn.Module:
    """Linear(4, width) -> ReLU -> Linear(width, 2)."""
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


# By hand, micronet-2019 with the freebie (params and mults at 16 bits, adds at 32):
# width 3: "0" params 15, storage 7.5, ops 12/2 + (3*3 + 3) = 18, MACs 12;  "1" ops 3/2 = 1.5;
#          "2" params 8, storage 4, ops 6/2 + (2*2 + 2) = 9, MACs 6   -> 23 params, 11.5, 28.5 ops, 18 MACs
# width 5: "0" params 25, storage 12.5, ops 20/2 + (3*5 + 5) = 30, MACs 20;  "1" ops 2.5;
#          "2" params 12, storage 6, ops 10/2 + (4*2 + 2) = 15, MACs 10 -> 37 params, 18.5, 47.5 ops, 30 MACs


@pytest.fixture(scope="module")
def narrow():
    return micronet.audit(mlp(3), (1, 4))


@pytest.fixture(scope="module")
def wide():
    return micronet.audit(mlp(5), (1, 4))


def test_a_widened_linear(narrow, wide):
    diff = diff_audits(narrow, wide)
    score = lambda storage, ops: storage / R_PARAMS + ops / R_OPS  # noqa: E731
    assert diff.score_delta == pytest.approx(score(18.5, 47.5) - score(11.5, 28.5))
    totals = diff.to_dict()["delta"]["totals"]
    assert (totals["params"], totals["storage"], totals["ops"], totals["macs"]) == (14, 7, 19, 12)
    assert [(c.kind, c.name) for c in diff.changes] == [("changed", "0"), ("changed", "2"), ("changed", "1")]
    first = diff.changes[0].to_dict()
    assert {k: first["delta"][k] for k in ("params", "storage", "ops", "macs")} == \
        {"params": 10, "storage": 5, "ops": 12, "macs": 8}
    assert first["score_effect"] == pytest.approx(score(5, 12))
    assert diff.changes[1].score_effect == pytest.approx(score(2, 6))
    assert diff.changes[2].changed == ("ops",) and diff.changes[2].score_effect == pytest.approx(score(0, 1))
    text = diff.text()
    assert "3 layer(s) changed" in text and "params 15 -> 25" in text


def test_renamed_layers_are_paired_and_a_new_layer_is_added(narrow):
    named = nn.Sequential(OrderedDict(fc1=nn.Linear(4, 3), act=nn.ReLU(), fc2=nn.Linear(3, 2), head=nn.Linear(2, 2)))
    diff = diff_audits(narrow, micronet.audit(named, (1, 4)))
    kinds = {c.name: (c.kind, c.before_name) for c in diff.changes}
    assert kinds == {"fc1": ("renamed", "0"), "act": ("renamed", "1"), "fc2": ("renamed", "2"),
                     "head": ("added", None)}
    head = next(c for c in diff.changes if c.name == "head")
    # Linear(2, 2): params 6, storage 3, ops 4/2 + (1*2 + 2) = 6, MACs 4
    assert [head.after[k] for k in ("params", "storage", "ops", "macs")] == [6, 3, 6, 4]
    assert diff.changes[0] is head  # the only change with an effect on the score
    assert all(c.changed == () and c.score_effect == 0 for c in diff.changes[1:])
    back = diff_audits(micronet.audit(named, (1, 4)), narrow)
    assert [(c.kind, c.name) for c in back.changes if c.kind == "removed"] == [("removed", "head")]


def test_history_entries_by_index_name_and_default(tmp_path, narrow, wide):
    history = [{"step": None, **narrow.to_dict()},
               {"step": {"index": 1, "name": "widen"}, **wide.to_dict()},
               {"step": {"index": 2, "name": "broken", "error": "boom"}}]
    path = tmp_path / "history.json"
    path.write_text(json.dumps(history))
    assert load_audit(f"{path}#0")["totals"]["params"] == 23
    assert load_audit(f"{path}#input")["totals"]["params"] == 23
    assert load_audit(f"{path}#widen")["totals"]["params"] == 37
    assert load_audit(str(path))["totals"]["params"] == 37  # the last entry with an audit
    with pytest.raises(UsageError, match="no audit"):
        load_audit(f"{path}#2")
    with pytest.raises(UsageError, match="no step named 'prune'.*#1 widen"):
        load_audit(f"{path}#prune")
    with pytest.raises(UsageError, match="entries 0 to 2"):
        load_audit(f"{path}#7")


def test_parse_delta():
    assert parse_delta("0.01") == (0.01, False) and parse_delta("5%") == (5.0, True)
    with pytest.raises(UsageError, match="--fail-above-delta"):
        parse_delta("lots")


def test_cli_diff_json_html_and_fail_above_delta(capsys, tmp_path, narrow, wide):
    a, b = write_json(narrow, tmp_path / "a.json"), write_json(wide, tmp_path / "b.json")
    out_json, page = tmp_path / "d.json", tmp_path / "d.html"
    code = main(["diff", str(a), str(b), "--json", str(out_json), "--html", str(page)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 layer(s) changed" in out
    doc = json.loads(out_json.read_text())
    assert doc["delta"]["totals"]["params"] == 14 and doc["changes"][0]["name"] == "0"
    html = page.read_text()
    assert "diff report" in html and "params 23 → 37" in html.replace("&nbsp;", " ")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", html, re.I)  # nothing fetched
    # the score grew by (7/36.5e6 + 19/10.49e9) / (11.5/36.5e6 + 28.5/10.49e9) = 60.9%
    assert main(["diff", str(a), str(b), "--fail-above-delta", "61%"]) == 0
    assert main(["diff", str(a), str(b), "--fail-above-delta", "60%"]) == 1
    assert main(["diff", str(b), str(a), "--fail-above-delta", "0"]) == 0  # it shrank
    out, err = capsys.readouterr()
    assert "grew by" in err
    assert main(["diff", str(a), str(b), "--fail-above-delta", "x"]) == 2


def test_cli_diff_of_specs_audits_both_with_the_same_options(capsys):
    code = main(["diff", "micronet:digits_cnn", "micronet:digits_cnn", "--track", "digits",
                 "--bits", "*=8"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "score +0 " in out and "0 layer(s) changed" in out


def test_the_html_page_escapes_layer_names(tmp_path, narrow):
    from micronet.reports.diffpage import render_diff_html

    evil = nn.Sequential(OrderedDict([("<script>x</script>", nn.Linear(4, 9))]))
    page = render_diff_html(diff_audits(narrow, micronet.audit(evil, (1, 4))))
    assert "<script>x</script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
