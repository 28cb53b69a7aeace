"""--out DIR holds one whole run after any ending: success, a failed step,
SIGINT, a full disk, SIGKILL at any moment; checked before work, locked."""
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import micronet
from micronet.errors import CompressionError, UsageError
from micronet.manager import Registries, get_plugin_manager
from micronet.outdir import check_output_file, check_output_folder, claim_output_folder
from micronet.pipeline import compress
from micronet.steps import CompressionStep


def recipe(*steps):
    return {"model": {"spec": "unused", "input": [1, 3, 16, 16]}, "score": {"freebie": False},
            "step": [dict(s) for s in steps]}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Siblings a run may create beside ``folder`` (staging, previous run, lock)."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def assert_whole_run(folder: Path, steps: int) -> None:
    """``folder`` is one complete run of ``steps`` steps: its history, one table
    per result, and a model.pt2 that re-scores to the score recorded last."""
    entries = json.loads((folder / "history.json").read_text())
    assert len(entries) == steps + 1
    good = [e for e in entries if e["step"] is None or e["step"]["error"] is None]
    tables = sorted(p.name for p in folder.glob("*.txt"))
    assert len(tables) == len(good)
    if (folder / "model.pt2").exists():
        again = micronet.audit(str(folder / "model.pt2"), freebie=False)
        assert again.score.total == pytest.approx(good[-1]["score"]["total"], rel=1e-9)


class Interrupting:
    """A plugin with steps that end a run badly: Ctrl-C, a crash."""

    @micronet.hookimpl
    def micronet_register_steps(self):
        def interrupt(model, options, context):
            raise KeyboardInterrupt

        return [CompressionStep("interrupt", "as if Ctrl-C were pressed", interrupt)]


@pytest.fixture
def registries():
    return Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Interrupting()]))


@pytest.fixture
def previous_run(tmp_path, small_model, registries):
    """``tmp_path/out`` holding a complete one-step run, and its snapshot."""
    out = tmp_path / "out"
    compress(recipe({"use": "half"}), model=small_model, registries=registries, out=out)
    return out, snapshot(out)


def test_a_second_run_replaces_the_first_as_a_whole(previous_run, small_model, registries):
    out, before = previous_run
    assert set(before) == {"00-input.txt", "01-half.txt", "history.json", "model.pt2", "state_dict.pt"}
    compress(recipe({"use": "sparsify", "amount": 0.5}, {"use": "half"}), model=small_model,
             registries=registries, out=out)
    assert set(snapshot(out)) == {"00-input.txt", "01-sparsify.txt", "02-half.txt", "history.json",
                                  "model.pt2", "state_dict.pt"}
    assert_whole_run(out, 2)
    assert leftovers(out) == []  # no staging folder, no lock file after a clean exit


def test_a_failed_step_leaves_one_consistent_run_without_the_old_model(previous_run, small_model):
    out, _ = previous_run
    plugin_registries = Registries.from_manager(get_plugin_manager(entry_points=False))

    def explode(model, options, context):
        raise RuntimeError("boom")

    class Exploding:
        @micronet.hookimpl
        def micronet_register_steps(self):
            return [CompressionStep("explode", "fails", explode)]

    plugin_registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Exploding()]))
    with pytest.raises(CompressionError, match="boom"):
        compress(recipe({"use": "sparsify", "amount": 0.5}, {"use": "explode"}), model=small_model,
                 registries=plugin_registries, out=out)
    # the new run, whole: its history with the error, its tables, and not the old run's model
    assert set(snapshot(out)) == {"00-input.txt", "01-sparsify.txt", "history.json"}
    entries = json.loads((out / "history.json").read_text())
    assert entries[-1]["step"]["error"] == "RuntimeError: boom"
    assert leftovers(out) == []


def test_ctrl_c_leaves_the_previous_run_untouched(previous_run, small_model, registries):
    out, before = previous_run
    with pytest.raises(KeyboardInterrupt):
        compress(recipe({"use": "sparsify", "amount": 0.5}, {"use": "interrupt"}), model=small_model,
                 registries=registries, out=out)
    assert snapshot(out) == before
    assert leftovers(out) == []


def test_a_full_disk_is_one_line_and_leaves_the_previous_run(previous_run, small_model, registries,
                                                             monkeypatch):
    out, before = previous_run

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("micronet.fileio.os.fsync", full)
    with pytest.raises(UsageError, match=r"no space left on the device \(hint: free some space"):
        compress(recipe({"use": "half"}), model=small_model, registries=registries, out=out)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert leftovers(out) == []


def test_a_second_run_on_the_same_folder_refuses_at_once(tmp_path, small_model, registries, monkeypatch):
    out = tmp_path / "out"

    def no_work(*args, **kwargs):
        raise AssertionError("audited while another run held the folder")

    with claim_output_folder(out):
        monkeypatch.setattr("micronet.pipeline.audit", no_work)
        with pytest.raises(UsageError, match=r"another micronet run is writing .*out \(lock"):
            compress(recipe({"use": "half"}), model=small_model, registries=registries, out=out)
    assert leftovers(out) == []
    with claim_output_folder(out):  # released: it can be taken again
        pass


@pytest.mark.parametrize("make, message", [
    (lambda tmp: "", "--out is empty"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file", "a file is in the way"),
    (lambda tmp: (tmp / "file").write_text("x") and tmp / "file" / "sub", "is a file, not a folder"),
    (lambda tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "thesis.tex").write_text("x") and tmp / "mine",
     "holds files that are not a micronet run"),
])
def test_the_output_folder_is_checked_before_any_work(tmp_path, small_model, registries, monkeypatch,
                                                      make, message):
    out = make(tmp_path)

    def no_work(*args, **kwargs):
        raise AssertionError("audited before checking --out")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    with pytest.raises(UsageError, match=message):
        compress(recipe({"use": "half"}), model=small_model, registries=registries, out=out)
    if (tmp_path / "mine").exists():
        assert (tmp_path / "mine" / "thesis.tex").read_text() == "x"  # never moved or removed


def test_report_files_are_checked_before_any_work(tmp_path, capsys):
    from micronet.cli import main

    for option in ("--json", "--csv", "--html"):
        assert main(["audit", "micronet:resnet18_cifar", option, str(tmp_path)]) == 2
        assert f"{option} {tmp_path} is a folder, not a file" in capsys.readouterr().err
    with pytest.raises(UsageError, match="--html is empty"):
        check_output_file("", "--html")
    recipe_file = tmp_path / "r.toml"
    recipe_file.write_text('[model]\nspec = "micronet:resnet18_cifar"\n[[step]]\nuse = "half"\n')
    assert main(["compress", str(recipe_file), "--html", str(tmp_path)]) == 2
    assert main(["compress", str(recipe_file), "--out", ""]) == 2
    assert "--out is empty" in capsys.readouterr().err


def test_an_empty_folder_and_a_previous_run_are_accepted(tmp_path):
    (tmp_path / "empty").mkdir()
    assert check_output_folder(tmp_path / "empty") == (tmp_path / "empty").absolute()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "history.json").write_text("[]")
    assert check_output_folder(tmp_path / "run").name == "run"


# ------------------------------------------------------------ SIGKILL

#: A run killed at one point by SIGKILL: the script wraps one function of the
#: pipeline in a child process only, then runs compress on a Small model.
KILLER = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from conftest import Small
    import micronet.outdir, micronet.pipeline
    from micronet.pipeline import compress

    point, out = sys.argv[1], sys.argv[2]

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def before(module, name, when=lambda *a, **k: True):
        real = getattr(module, name)
        def wrapper(*args, **kwargs):
            if when(*args, **kwargs):
                die()
            return real(*args, **kwargs)
        setattr(module, name, wrapper)

    def after(module, name):
        real = getattr(module, name)
        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            die()
        setattr(module, name, wrapper)

    if point == "in-a-step":
        before(micronet.pipeline, "_check_produced")
    elif point == "writing-tables":
        after(micronet.pipeline, "atomic_write_text")
    elif point == "writing-model":
        before(micronet.pipeline, "atomic_write_bytes", lambda path, data: str(path).endswith("model.pt2"))
    elif point == "before-swap":
        before(micronet.outdir, "_exchange")
    elif point == "after-swap":
        after(micronet.outdir, "_exchange")
    elif point == "rename-aside":  # a system without an atomic exchange, killed between its two renames
        micronet.outdir._exchange = lambda a, b: False
        real_rename = os.rename
        def rename(src, dst):
            real_rename(src, dst)
            if ".previous-" in str(dst):
                die()
        micronet.outdir.os.rename = rename
    steps = [{{"use": "sparsify", "amount": 0.5}}, {{"use": "half"}}]
    compress({{"model": {{"spec": "unused", "input": [1, 3, 16, 16]}}, "score": {{"freebie": False}},
              "step": steps}}, model=Small(), out=out)
""")

KILL_POINTS = ["in-a-step", "writing-tables", "writing-model", "before-swap", "after-swap", "rename-aside"]


def test_sigkill_at_any_point_leaves_the_previous_run_or_the_new_one(previous_run, small_model, registries,
                                                                     tmp_path):
    out, before = previous_run
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=str(Path(__file__).parent)))
    outcomes = {}
    for point in KILL_POINTS:
        process = subprocess.run([sys.executable, str(script), point, str(out)], capture_output=True,
                                 text=True, timeout=300)
        assert process.returncode == -signal.SIGKILL, (point, process.stderr[-2000:])
        if not out.exists():  # only without an atomic exchange: the next claim puts the old run back
            with claim_output_folder(out):
                pass
            point += " (recovered)"
        if snapshot(out) == before:
            outcomes[point] = "previous"
        else:
            assert_whole_run(out, 2)
            outcomes[point] = "new"
        # the next run cleans what the killed one left, and finds the folder usable
        compress(recipe({"use": "half"}), model=small_model, registries=registries, out=out)
        assert leftovers(out) == []
        before = snapshot(out)
    assert outcomes == {"in-a-step": "previous", "writing-tables": "previous", "writing-model": "previous",
                        "before-swap": "previous", "after-swap": "new", "rename-aside (recovered)": "previous"}


def test_nan_weights_stop_the_step_and_nothing_is_kept(small_model, registries, tmp_path):
    def poison(model, options, context):
        with torch.no_grad():
            model.fc.weight[0, 0] = float("nan")
        return model

    class Poisoning:
        @micronet.hookimpl
        def micronet_register_steps(self):
            return [CompressionStep("poison", "writes a NaN", poison)]

    registries = Registries.from_manager(get_plugin_manager(entry_points=False, extra=[Poisoning()]))
    with pytest.raises(CompressionError, match=r"1 non-finite value\(s\) in parameter 'fc.weight'"):
        compress(recipe({"use": "poison"}), model=small_model, registries=registries, out=tmp_path / "o")
    assert not (tmp_path / "o" / "model.pt2").exists()


def test_an_infinite_learning_rate_is_refused_before_any_work(small_model, registries, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("audited before validating")

    monkeypatch.setattr("micronet.pipeline.audit", no_work)
    for lr in (float("inf"), float("nan")):
        with pytest.raises(UsageError, match="option 'lr'"):
            compress(recipe({"use": "finetune", "lr": lr}), model=small_model, registries=registries)


def test_a_buffer_may_hold_infinity_but_not_nan(small_model, registries):
    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = small_model
            self.register_buffer("mask", torch.tensor([0.0, float("-inf")]))

        def forward(self, x):
            return self.inner(x)

    history = compress(recipe({"use": "half"}), model=Masked(), registries=registries)
    assert history.final.score.total > 0
