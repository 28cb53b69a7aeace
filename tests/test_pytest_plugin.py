"""The pytest plugin (issue 15), run by pytester in this process: the
micronet_audit fixture and its budgets, saving and comparing audits, HTML
reports, the terminal summary, -p no:micronet, and a cheap start-up."""
import json
import subprocess
import sys

pytest_plugins = ["pytester"]

MODELS = '''
from torch import nn
import micronet


def mlp(width):
    """Linear(4, width) -> ReLU -> Linear(width, 2)."""
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))
'''

# Linear(4, 3) -> ReLU -> Linear(3, 2) has 4*3 + 3 + 3*2 + 2 = 23 params; with width 5, 25 + 12 = 37.
# Its score (micronet-2019, cifar100, freebie): 11.5/36.5e6 + 28.5/10.49e9 = 3.17785e-07;
# with width 5, 18.5/36.5e6 + 47.5/10.49e9: 60.9% more.


def test_a_passing_and_a_failing_budget(pytester):
    pytester.makepyfile(MODELS + '''
def test_fits(micronet_audit):
    result = micronet_audit(mlp(3), inputs=(1, 4), name="mlp")
    micronet_audit.assert_budget(result, params=23)


def test_over(micronet_audit):
    micronet_audit(mlp(3), (1, 4), name="mlp", budget={"params": 20, "score": 1})
''')
    run = pytester.runpytest()
    run.assert_outcomes(passed=1, failed=1)
    run.stdout.fnmatch_lines([
        "*BudgetExceeded: Sequential: params 23 parameters exceeds the budget 20 by 3 (+15.0%)*",
        "*micronet audits*",
        "mlp: score 3.17785e-07 (micronet-2019, cifar100); budget: params <= 23; params <= 20, score <= 1 (over budget)",
    ])


def test_save_then_compare_against_the_saved_audit(pytester, tmp_path):
    saved = tmp_path / "baseline"
    pytester.makepyfile(test_model=MODELS + '''
WIDTH = 3


def test_model(micronet_audit):
    micronet_audit(mlp(WIDTH), (1, 4), name="mlp")
''')
    pytester.runpytest(f"--micronet-save={saved}").assert_outcomes(passed=1)
    (file,) = saved.iterdir()
    assert json.loads(file.read_text())["totals"]["params"] == 23
    # the same run again compares equal
    pytester.runpytest(f"--micronet-compare={saved}").assert_outcomes(passed=1)
    pytester.makepyfile(test_model=MODELS + '''
def test_model(micronet_audit):
    micronet_audit(mlp(5), (1, 4), name="mlp")
''')
    pytester.runpytest(f"--micronet-compare={saved}", "--micronet-compare-fail=61").assert_outcomes(passed=1)
    run = pytester.runpytest(f"--micronet-compare={saved}", f"--micronet-save={saved}")
    run.assert_outcomes(failed=1)
    run.stdout.fnmatch_lines(["*the score of mlp grew by more than 0%*", "*score +1.9359*(+60.92%)*",
                              "*params 15 -> 25*", "mlp: score 5.11377e-07 (micronet-2019, cifar100); budget: none; +60.92% vs saved (more than 0%)"])
    # compared before it was saved: the folder now holds the wider model, and it compares equal
    assert json.loads(file.read_text())["totals"]["params"] == 37
    pytester.runpytest(f"--micronet-compare={saved}").assert_outcomes(passed=1)


def test_cache_and_html_reports(pytester, tmp_path):
    pytester.makepyfile(MODELS + '''
def test_twice(micronet_audit):
    model = mlp(3)
    first = micronet_audit(model, (1, 4))
    assert micronet_audit(model, (1, 4)) is first          # cached
    assert micronet_audit(model, (1, 4), track="imagenet") is not first
    with __import__("torch").no_grad():
        model[0].weight[0].zero_()                          # pruned in place: audited again
    assert micronet_audit(model, (1, 4)).totals["nonzero_params"] == 23 - 4
''')
    pages = tmp_path / "html"
    pytester.runpytest(f"--micronet-html={pages}").assert_outcomes(passed=1)
    written = sorted(p.name for p in pages.iterdir())
    # one page per audit, labelled by the test and the class, #2 and #3 for the imagenet audit and
    # the model pruned in place
    assert [name.rsplit("-", 1)[0] for name in written] == [
        "test_cache_and_html_reports.py_test_twice_Sequential",
        "test_cache_and_html_reports.py_test_twice_Sequential_2", "test_cache_and_html_reports.py_test_twice_Sequential_3"]
    assert "<!doctype html>" in (pages / written[0]).read_text()


def test_no_micronet_turns_the_plugin_off(pytester):
    pytester.makepyfile('''
def test_uses_it(micronet_audit):
    pass
''')
    pytester.runpytest("-p", "no:micronet").stdout.fnmatch_lines(["*fixture 'micronet_audit' not found*"])
    assert pytester.runpytest("-p", "no:micronet", "--micronet-save=x").ret == 4  # an unknown option


def test_the_plugin_is_an_entry_point_and_imports_nothing_heavy():
    code = ("import sys, importlib.metadata as m; "
            "(ep,) = [e for e in m.entry_points(group='pytest11') if e.name == 'micronet']; ep.load(); "
            "print(ep.value, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["micronet.pytest_plugin", "False"], done.stderr


def test_the_lazy_package_keeps_audit_the_function(monkeypatch):
    # importing the submodule micronet.audit binds the package's name `audit` to the module;
    # the package keeps it the function, and a test's monkeypatch of it still wins
    code = ("import sys, micronet; lazy = 'torch' not in sys.modules; import micronet.audit; "
            "from micronet import *; print(lazy, callable(micronet.audit), audit is micronet.audit, "
            "hasattr(micronet, 'no_such_name'), micronet.BudgetExceeded.__mro__[1].__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "True", "True", "False", "AssertionError"], done.stderr
    import micronet

    monkeypatch.setattr(micronet, "audit", len)
    assert micronet.audit is len
    monkeypatch.undo()
    assert micronet.audit.__name__ == "audit"
