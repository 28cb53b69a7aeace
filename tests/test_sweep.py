"""Sweeps on the local engine and on Ray: hand-computed evaluations, the
sensitivity step's own table, one-line errors naming the failed task, and
Ray's table equal to the local one (a local Ray of 2 CPUs started and shut
down by the sweep; a cluster in another process joined by address and left
running; a worker killed once and retried, the rows still in task order).

Ray costs seconds to start on 2 cores: three tests use it, and the cluster of
the last two runs in a subprocess started once for the module (its raylet
and workers get tests/ on PYTHONPATH, so they import this module's
``dies_once``), stopped and checked gone at the end."""
import io
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ray_processes_under, trained_digits_cnn
from torch import nn

from micronet.errors import CompressionError, UsageError
from micronet.plugins.sensitivity import measure, perturbed
from micronet.selection import weighted_candidates
from micronet.sweep import (LayerSetting, WeightSweep, check_sweep_options, describe_setting, evaluate_setting,
                            progress_bar, run_tasks)
from micronet.training.data import batches

SHAPE = (1, 1, 8, 8)
DATA = {"dataset": "digits", "batch_size": 64, "calibration_batches": 3}
LAYERS = ("conv1", "conv2", "conv3", "fc")
SETTINGS = (("bits", 4), ("bits", 2), ("sparsity", 0.75))


def digits_sweep() -> tuple[WeightSweep, list[LayerSetting]]:
    """The trained digits CNN and its 3 calibration batches (180 real digits);
    its 4 weighted layers x 3 settings."""
    loaded = tuple(batches(DATA, SHAPE, split="calibration"))
    tasks = [LayerSetting(layer, kind, level) for layer in LAYERS for kind, level in SETTINGS]
    return WeightSweep(trained_digits_cnn(), loaded, perturbed), tasks


def gone_within(folder: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while ray_processes_under(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not ray_processes_under(folder)


# ------------------------------------------------------------ local engine


def test_one_setting_by_hand():
    # fc: logits = W x with W = [[0.5, 0], [0, 1]]; sparsity 0.75 zeros the 3 smallest |w| (0, 0, 0.5)
    fc = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0]]))
    model = nn.Sequential()
    model.add_module("fc", fc)
    x, y = torch.tensor([[1.0, 0.25], [0.0, 1.0]]), torch.tensor([0, 1])
    shared = WeightSweep(model, ((x, y),), perturbed)
    rows = run_tasks(evaluate_setting, shared, [LayerSetting("fc", "sparsity", 0.0),
                                                LayerSetting("fc", "sparsity", 0.75)])
    # unchanged: logits [0.5, 0.25] (label 0) and [0, 1] (label 1), both right;
    # CE = log(1 + e^(other - right)) per example
    assert rows[0][0] == 100.0 and rows[0][1] == pytest.approx((math.log1p(math.exp(-0.25))
                                                                 + math.log1p(math.exp(-1))) / 2, abs=1e-7)
    # W' = [[0, 0], [0, 1]]: logits [0, 0.25] (label 0, now wrong) and [0, 1]
    assert rows[1][0] == 50.0 and rows[1][1] == pytest.approx((math.log1p(math.exp(0.25))
                                                                + math.log1p(math.exp(-1))) / 2, abs=1e-7)
    assert torch.equal(fc.weight, torch.tensor([[0.5, 0.0], [0.0, 1.0]]))  # restored


def test_the_local_engine_gives_the_sensitivity_steps_table():
    shared, tasks = digits_sweep()
    rows = run_tasks(evaluate_setting, shared, tasks)
    model = trained_digits_cnn()
    targets = weighted_candidates(model.named_modules(), ())
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the sweep's thread count
    try:
        table = measure(model, targets, SETTINGS, shared.batches)["table"]
    finally:
        torch.set_num_threads(before)
    assert [(r["layer"], r["kind"], r["level"]) for r in table] == [(t.layer, t.kind, t.level) for t in tasks]
    assert [(r["top1"], r["loss"]) for r in table] == [(round(t, 4), round(l, 6)) for t, l in rows]
    assert rows[1][0] < rows[0][0] <= 100  # conv1 at 2 bits hurts more than at 4
    assert torch.get_num_threads() == before


def threads_seen(shared, task):
    return torch.get_num_threads()


def test_every_local_evaluation_runs_with_the_pinned_threads_and_the_callers_count_comes_back():
    before = torch.get_num_threads()
    assert run_tasks(threads_seen, None, range(3)) == [1, 1, 1]
    assert run_tasks(threads_seen, None, range(2), threads=2) == [2, 2]
    assert run_tasks(threads_seen, None, range(2), threads=None) == [before, before]
    assert torch.get_num_threads() == before


def test_a_failed_local_task_names_its_layer_and_setting():
    shared, _ = digits_sweep()
    tasks = [LayerSetting("conv1", "bits", 4), LayerSetting("conv2", "act_bits", 4)]
    with pytest.raises(CompressionError) as error:
        run_tasks(evaluate_setting, shared, tasks, describe=describe_setting, label="sensitivity")
    assert str(error.value) == ("sensitivity on local: conv2 at 4-bit input failed: ValueError: "
                                "'act_bits' is not a perturbation of the weight")
    assert torch.equal(shared.model.conv2.weight, trained_digits_cnn().conv2.weight)


def test_settings_in_words():
    assert [describe_setting(LayerSetting("conv2", kind, level)) for kind, level in
            [("bits", 4), ("sparsity", 0.5), ("act_bits", 8), ("channels", 0.25), ("rank", 3)]] == \
        ["conv2 at 4 bits", "conv2 at 50% sparsity", "conv2 at 8-bit input", "conv2 at 25% channels",
         "conv2 at rank 3"]


@pytest.mark.parametrize("options, says", [
    ({"engine": "dask"}, r"engine must be one of 'local', 'ray', got 'dask'"),
    ({"engine": "ray", "address": "http://head:10001"}, r"address must be 'auto', 'ray://HOST:PORT' or 'HOST:PORT', "
                                                        r"got 'http://head:10001'"),
    ({"engine": "ray", "address": "ray://head"}, "address must be"),
    ({"engine": "ray", "address": "auto", "num_cpus": 2}, r"num_cpus is for a local Ray, got num_cpus = 2 with "
                                                          r"address = 'auto'"),
    ({"address": "auto"}, r"address is an option of the ray engine, got address = 'auto' with engine = 'local'"),
    ({"num_cpus": 2}, "num_cpus is an option of the ray engine"),
    ({"engine": "ray", "num_cpus": 0}, r"num_cpus must be a whole number >= 1, got 0"),
    ({"threads": 1.5}, r"threads must be a whole number >= 1, got 1.5"),
    ({"max_retries": -1}, r"max_retries must be a whole number >= 0, got -1"),
    ({"max_retries": None}, r"max_retries must be a whole number >= 0, got None"),
])
def test_bad_options_are_refused_in_one_line(options, says):
    with pytest.raises(UsageError, match=says) as error:
        check_sweep_options(**options)
    assert "\n" not in str(error.value)
    with pytest.raises(UsageError, match=says):  # before any evaluation
        run_tasks(threads_seen, None, [1], **options)


def test_the_ray_engine_without_ray_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(UsageError) as error:
        run_tasks(threads_seen, None, [1], engine="ray")
    assert str(error.value) == "engine = 'ray' needs Ray: pip install 'micronet-toolkit[distributed]'"
    assert run_tasks(threads_seen, None, [1]) == [1]  # the local engine does not need it


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_progress_bar_shows_only_on_a_terminal_when_asked_and_tqdm_is_there(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_tasks(threads_seen, None, range(3), label="sensitivity", progress=True)
    shown = sys.stderr.getvalue()
    assert "sensitivity" in shown and "0/3" in shown
    monkeypatch.setattr(sys, "stderr", Terminal())
    run_tasks(threads_seen, None, range(3), progress=False)  # --quiet
    assert sys.stderr.getvalue() == ""
    monkeypatch.setitem(sys.modules, "tqdm", None)  # not installed
    run_tasks(threads_seen, None, range(3), progress=True)
    assert sys.stderr.getvalue() == ""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal (a log file, CI)
    assert type(progress_bar(3, "sweep", True)).__name__ == "_NoBar"


# ------------------------------------------------------------------- on Ray


def test_a_local_ray_of_two_cpus_gives_the_local_engines_table_and_is_shut_down_after(monkeypatch, tmp_path_factory):
    ray = pytest.importorskip("ray")  # the test extra installs it (CI fails on a skip)
    assert not ray.is_initialized()
    folder = str(tmp_path_factory.mktemp("ray"))
    monkeypatch.setenv("RAY_TMPDIR", folder)  # Ray's sockets and logs under pytest's tmp
    shared, tasks = digits_sweep()
    local = run_tasks(evaluate_setting, shared, tasks)
    on_ray = run_tasks(evaluate_setting, shared, tasks, engine="ray", num_cpus=2, describe=describe_setting,
                       label="sensitivity")
    assert on_ray == local  # bit for bit, in task order
    assert local[1][0] < local[0][0]  # a real sweep: 2 bits on conv1 hurts more than 4
    assert not ray.is_initialized() and gone_within(folder, 20)


HEAD = """
import sys, ray
ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=sys.argv[1], logging_level="ERROR")
print(ray.get_runtime_context().gcs_address, flush=True)
sys.stdin.read()  # until the test closes our stdin
ray.shutdown()
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The GCS address of a 2-CPU Ray run by a subprocess (a cluster this
    process only joins); stopped after the module, its processes checked gone."""
    pytest.importorskip("ray")
    folder = str(tmp_path_factory.mktemp("cluster"))
    # tests/ on the workers' path; no token: the joining tests connect by address as a plain driver
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    head = subprocess.Popen([sys.executable, "-c", HEAD, folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        address = head.stdout.readline().strip()
        assert address, "the Ray head did not start"
        yield address
    finally:
        head.stdin.close()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
    assert gone_within(folder, 20), "Ray processes left running"


def test_a_failed_task_on_a_joined_cluster_names_its_layer_and_setting_and_the_cluster_stays_up(cluster):
    import ray

    shared, _ = digits_sweep()
    tasks = [LayerSetting("conv1", "bits", 4), LayerSetting("conv2", "act_bits", 4), LayerSetting("fc", "bits", 2)]
    with pytest.raises(CompressionError) as error:
        run_tasks(evaluate_setting, shared, tasks, engine="ray", address=cluster, describe=describe_setting,
                  label="sensitivity")
    assert str(error.value) == ("sensitivity on ray: conv2 at 4-bit input failed: ValueError: "
                                "'act_bits' is not a perturbation of the weight")
    assert not ray.is_initialized()  # our connection closed...
    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    try:  # ...and the cluster still runs
        assert ray.cluster_resources()["CPU"] == 2
    finally:
        ray.shutdown()


def dies_once(folder, task):
    """Task 0 kills its worker process the first time it runs (a marker file
    says it did); every task then returns 10 x its number."""
    marker = Path(folder) / f"died-{task}"
    if task == 0 and not marker.exists():
        marker.touch()
        os._exit(1)
    return 10 * task


def test_a_worker_that_dies_is_retried_and_the_rows_keep_task_order(cluster, tmp_path):
    import ray

    ray.init(address=cluster, logging_level="ERROR", log_to_driver=False)
    try:  # a Ray the caller opened is used as it is and left open
        retried = tmp_path / "retried"
        retried.mkdir()
        assert run_tasks(dies_once, str(retried), range(4), engine="ray", max_retries=1) == [0, 10, 20, 30]
        assert (retried / "died-0").exists() and ray.is_initialized()
        (tmp_path / "once").mkdir()
        with pytest.raises(CompressionError, match=r"^sweep on ray: 0 failed: WorkerCrashedError: ") as error:
            run_tasks(dies_once, str(tmp_path / "once"), range(4), engine="ray", max_retries=0)
        assert "\n" not in str(error.value)
    finally:
        ray.shutdown()
