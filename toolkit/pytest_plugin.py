"""micronet's pytest plugin: audits and budgets in a test suite.

Loaded through the ``pytest11`` entry point named ``micronet`` wherever
micronet-toolkit is installed (``-p no:micronet`` turns it off). It imports
nothing heavy: torch and the audit load when a test first asks for one.

- the ``micronet_audit`` fixture: ``micronet_audit(model_or_spec,
  inputs=(1, 3, 32, 32), track="cifar100", budget={"score": 0.05})`` audits
  (cached for the session by model, inputs, track and options) and returns
  the :class:`~micronet.audit.Result`; with ``budget`` it asserts it
  (:func:`micronet.assert_budget`), as ``micronet_audit.assert_budget(result,
  score=...)`` does;
- ``--micronet-save DIR``: every audit of the session as ``DIR/LABEL.json``;
- ``--micronet-compare DIR``: each audit against ``DIR/LABEL.json``; the test
  fails, showing the diff, when the score grew by more than
  ``--micronet-compare-fail PCT`` percent (default 0);
- ``--micronet-html DIR``: an HTML report per audited model;
- a terminal summary: each model audited, its score and its budget.

An audit's LABEL is the ``name=`` given, else the spec, else the test's id
and the model's class; its file name is the label with every character
outside ``A-Za-z0-9._-`` made ``_`` plus a short hash of the label.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

__all__ = ["micronet_audit"]


@dataclass
class _Audited:
    """What the summary says of one label: its result, budgets and baseline."""

    label: str
    result: Any
    budgets: list[str] = field(default_factory=list)
    failed: bool = False
    grew: bool = False
    baseline: str = ""
    written: Any = None  # the result last written (--micronet-save / --micronet-html)


@dataclass
class _Session:
    """The session's audits: ``cache`` (key -> (model kept alive, result)) and
    ``audited`` (label -> :class:`_Audited`), in the order they were made."""

    save: str | None
    compare: str | None
    compare_fail: float
    html: str | None
    cache: dict = field(default_factory=dict)
    audited: dict = field(default_factory=dict)
    compared: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)


_SESSION = pytest.StashKey[_Session]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("micronet", "MicroNet audits (micronet-toolkit)")
    group.addoption("--micronet-save", metavar="DIR", help="write every audit of the session as JSON into DIR")
    group.addoption("--micronet-compare", metavar="DIR",
                    help="compare each audit with the one saved in DIR (--micronet-save); a test fails "
                         "when its score grew by more than --micronet-compare-fail")
    group.addoption("--micronet-compare-fail", metavar="PCT", type=float, default=0.0,
                    help="percent the score may grow over the saved one (default 0)")
    group.addoption("--micronet-html", metavar="DIR", help="write an HTML report per audited model into DIR")


def pytest_configure(config: pytest.Config) -> None:
    option = config.getoption
    config.stash[_SESSION] = _Session(option("micronet_save"), option("micronet_compare"),
                                      option("micronet_compare_fail"), option("micronet_html"))


def _file_name(label: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_.")[:80] or "model"
    return f"{slug}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def _freeze(value: Any) -> Any:
    """A hashable stand-in for options: tensors by shape and dtype."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return ("tensor", tuple(value.shape), str(value.dtype))
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _model_key(model: Any) -> Any:
    """A spec by its text; a module by identity, its parameters' shapes and
    dtypes and its nonzero count (so pruning it in place re-audits)."""
    if isinstance(model, str):
        return ("spec", model)
    import torch

    with torch.no_grad():
        params = tuple((name, tuple(p.shape), str(p.dtype), int(torch.count_nonzero(p)) if not p.is_meta else -1)
                       for name, p in model.named_parameters())
    return ("module", id(model), params)


class _Auditor:
    """The ``micronet_audit`` fixture's value (see the module's docstring)."""

    def __init__(self, session: _Session, node: pytest.Item):
        self._session, self._node = session, node

    def __call__(self, model: Any, inputs: Any = None, *, track: str = "cifar100", name: str | None = None,
                 budget: dict | None = None, **options: Any):
        """Audit ``model`` (an ``nn.Module`` or a spec) once per session.

        ``inputs``: one shape (``(1, 3, 32, 32)`` or ``"1x3x32x32"``) or what
        :func:`micronet.audit`'s ``inputs=`` takes (several inputs);
        ``options``: the other keywords of :func:`micronet.audit`;
        ``budget``: bounds for :func:`micronet.assert_budget`."""
        __tracebackhide__ = True  # a failure shows the test's line, not the plugin's
        import micronet

        session = self._session
        key = (_model_key(model), _freeze(inputs), track, _freeze(options))
        if key not in session.cache:
            one = isinstance(inputs, str) or (isinstance(inputs, (tuple, list)) and
                                              all(isinstance(n, int) for n in inputs))
            shape, many = (inputs, None) if one else (None, inputs)
            session.cache[key] = (model, micronet.audit(model, shape, track, inputs=many, **options))
        result = session.cache[key][1]
        label = name or self._default_label(model, key)
        entry = session.audited.setdefault(label, _Audited(label, result))
        entry.result = result
        failure = self._compare(label, result)  # before saving: save and compare may share a folder
        if entry.written is not result:  # a cache hit under the same label is written once
            self._write(label, result)
            entry.written = result
        if failure:
            pytest.fail(failure, pytrace=False)
        if budget:
            self.assert_budget(result, _label=label, **budget)
        return result

    def assert_budget(self, result, *, _label: str | None = None, **bounds: Any):
        """:func:`micronet.assert_budget`, noted for the terminal summary."""
        __tracebackhide__ = True
        from micronet.budget import assert_budget

        label = _label or next((a.label for a in self._session.audited.values() if a.result is result),
                               str(result.model))
        entry = self._session.audited.setdefault(label, _Audited(label, result))
        text = ", ".join(f"{k} <= {v}" for k, v in bounds.items())
        if text not in entry.budgets:
            entry.budgets.append(text)
        try:
            return assert_budget(result, **bounds)
        except AssertionError:
            entry.failed = True
            raise

    def _default_label(self, model: Any, key: Any) -> str:
        """The spec, else ``NODEID::Class``; ``#2``, ``#3`` for further modules
        (or states of one module) audited under the same label."""
        if isinstance(model, str):
            return model
        base = f"{self._node.nodeid}::{type(model).__name__}"
        labels = self._session.labels
        label, k = base, 1
        while labels.setdefault(label, key) != key:
            k += 1
            label = f"{base}#{k}"
        return label

    def _write(self, label: str, result) -> None:
        from pathlib import Path

        session = self._session
        if session.save:
            from micronet.reports.json_report import write_json

            Path(session.save).mkdir(parents=True, exist_ok=True)
            write_json(result, Path(session.save) / f"{_file_name(label)}.json")
        if session.html:
            from micronet.reports.html import write_audit_html

            Path(session.html).mkdir(parents=True, exist_ok=True)
            write_audit_html(result, Path(session.html) / f"{_file_name(label)}.html")

    def _compare(self, label: str, result) -> str:
        """The failure message of the comparison with the saved audit (once per label)."""
        session = self._session
        if not session.compare:
            return ""
        if label not in session.compared:
            session.compared[label] = _against_baseline(session, label, result)
        return session.compared[label]


def _against_baseline(session: _Session, label: str, result) -> str:
    """The failure message when ``result``'s score grew past the allowance
    over the saved audit (empty when it did not, or none was saved)."""
    from pathlib import Path

    from micronet.diff import diff_audits, read_audit_file

    path = Path(session.compare) / f"{_file_name(label)}.json"
    entry = session.audited[label]
    if not path.is_file():
        entry.baseline = "no saved audit"
        return ""
    diff = diff_audits(read_audit_file(str(path)), result)
    fraction = diff.score_delta_fraction
    entry.baseline = f"{100 * fraction:+.2f}% vs saved" if fraction is not None else "saved score 0"
    if diff.exceeds((session.compare_fail, True)):
        entry.grew = True
        return (f"micronet: the score of {label} grew by more than {session.compare_fail:g}% over {path}:\n"
                + diff.text(top=10))
    return ""


@pytest.fixture
def micronet_audit(request: pytest.FixtureRequest) -> _Auditor:
    """Audit a model or spec (cached for the session): ``micronet_audit(model,
    inputs=(1, 3, 32, 32), track="cifar100", budget={"score": 0.05})``."""
    return _Auditor(request.config.stash[_SESSION], request.node)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    from micronet.text import printable

    session = config.stash.get(_SESSION, None)
    if not session or not session.audited:
        return
    terminalreporter.section("micronet audits")
    for entry in session.audited.values():
        score = entry.result.score
        budget = "; ".join(entry.budgets) or "none"
        if entry.budgets:
            budget += " (over budget)" if entry.failed else " (within)"
        baseline = f"; {entry.baseline}" + (f" (more than {session.compare_fail:g}%)" if entry.grew else "") \
            if entry.baseline else ""
        terminalreporter.line(f"{printable(entry.label)}: score {score.total:.6g} ({score.rulebook}, "
                              f"{score.track}); budget: {budget}{baseline}", red=entry.failed or entry.grew)
