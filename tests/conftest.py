"""Shared fixtures: a fresh plugin manager, and a small model, per test that asks for one."""
import functools
import importlib.metadata
import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings
from torch import nn

from micronet.manager import Registries, get_plugin_manager


# CI (CI=true) replays the same examples on every run, so a submission never fails on a
# seed nobody saw; runs elsewhere stay random and keep finding corners.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


class Small(nn.Module):
    """conv -> BN -> ReLU -> pool -> linear: every kind of layer, fast to audit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.bn(self.conv(x)))).flatten(1))


@pytest.fixture
def registries():
    """Registries of a fresh manager without third-party entry points."""
    return Registries.from_manager(get_plugin_manager(entry_points=False))


@pytest.fixture
def small_model():
    """A fresh :class:`Small` (input 3xHxW, 10 classes) for the pipeline tests."""
    return Small()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


def add_entry_point(monkeypatch, name: str, value: str) -> None:
    """Make ``importlib.metadata.entry_points(group="micronet")`` also list
    ``name = value``, as if a package installing that plugin were present."""
    extra = importlib.metadata.EntryPoint(name=name, value=value, group="micronet")
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        return found + [extra] if kwargs.get("group") == "micronet" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)


# ------------------------------------------------------------ CI: no silent skips
# On CI (CI set) a skipped test fails the run: the browser test without Chromium, the
# example plugin's tests without the package installed, anything a missing dependency
# turns off would otherwise pass unseen. Elsewhere skips stay skips (`-rs` lists them).

_SKIPPED: list[tuple[str, str]] = []


def _note_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append((report.nodeid, reason))


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_collectreport(report):
    _note_skip(report)


#: Screenshots the browser tests take, kept for people and CI to look at.
ARTEFACTS_ENV = "MICRONET_TEST_ARTEFACTS"
_ARTEFACTS: list[Path] = []


@pytest.fixture(scope="session")
def artefacts(tmp_path_factory) -> Path:
    """The folder for test artefacts (screenshots): ``$MICRONET_TEST_ARTEFACTS``
    when set (a CI job uploads it), else a session folder under pytest's
    temporary root; the run's summary says where they are."""
    folder = Path(os.environ[ARTEFACTS_ENV]) if os.environ.get(ARTEFACTS_ENV) else \
        tmp_path_factory.mktemp("artefacts", numbered=False)
    folder.mkdir(parents=True, exist_ok=True)
    _ARTEFACTS.append(folder)
    return folder


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("CI") and _SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for folder in _ARTEFACTS:
        shots = sorted(folder.glob("*.png"))
        if shots:
            terminalreporter.line(f"test artefacts: {len(shots)} screenshot(s) in {folder} "
                                  f"(set {ARTEFACTS_ENV} to keep them elsewhere)")
    if os.environ.get("CI") and _SKIPPED:
        terminalreporter.section("skipped on CI", sep="=", red=True, bold=True)
        for nodeid, reason in _SKIPPED:
            terminalreporter.line(f"SKIPPED {nodeid}: {reason}", red=True)
        terminalreporter.line(f"CI is set: {len(_SKIPPED)} skipped test(s) fail the run; "
                              "install what they need (`make test` does)", red=True)


@functools.lru_cache(maxsize=1)
def _trained_digits_state() -> dict:
    from micronet.models import digits_cnn
    from micronet.training.train import TrainConfig, fit

    torch.manual_seed(0)
    model = digits_cnn()
    fit(model, {"dataset": "digits", "batch_size": 64},
        TrainConfig(epochs=8, lr=0.1, device="cpu", progress=False, evaluate=False),
        input_shape=(1, 1, 8, 8), num_classes=10, log=lambda line: None)
    return {k: v.clone() for k, v in model.state_dict().items()}


def trained_digits_cnn() -> nn.Module:
    """micronet:digits_cnn after 8 epochs of SGD (lr 0.1, batch 64, seed 0) on the
    real digits train split: >= 97% top-1 (about 1 s on 2 cores, trained once per
    run; each call returns a fresh copy in eval mode)."""
    from micronet.models import digits_cnn

    model = digits_cnn()
    model.load_state_dict(_trained_digits_state())
    return model.eval()


def digits_recipe(*steps) -> dict:
    """A recipe document for a model handed to ``compress(model=...)`` (the
    spec is unused) on the digits track and data (freebie off, 2
    calibration batches of 64), running ``steps``."""
    return {"model": {"spec": "unused", "input": [1, 1, 8, 8]},
            "score": {"track": "digits", "rulebook": "micronet-2019", "freebie": False},
            "data": {"dataset": "digits", "batch_size": 64, "calibration_batches": 2},
            "step": [dict(step) for step in steps]}


def ray_processes_under(folder: str) -> list[int]:
    """Pids of the processes whose command line names ``folder`` (a Ray's
    temporary folder: its GCS server and raylet)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and folder in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
