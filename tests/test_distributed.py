"""Data-parallel training under torchrun (micronet.training.distributed): the
environment torchrun sets, each rank's share of the batches one process
draws, and two real runs of `micronet compress` under torchrun with two CPU
processes (gloo): the same global batch gives the same training as one
process, and a rank that fails ends the run with one error line and a whole
--out folder."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, TensorDataset

from micronet.errors import UsageError
from micronet.pipeline import compress
from micronet.training.data import loaders
from micronet.training.distributed import RankBatches, World, first_failure, launched, shard_loaders

SHAPE = (1, 1, 8, 8)
DIGITS = {"dataset": "digits", "batch_size": 64}


@pytest.fixture
def sklearn():
    """scikit-learn's ``load_digits``: the tests reading the images need the data extra."""
    return pytest.importorskip("sklearn.datasets")


# ------------------------------------------------------------------ torchrun's environment


def test_launched_reads_torchrun_variables():
    assert launched({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    assert launched({"RANK": "1", "WORLD_SIZE": "2"}) == World(1, 2, 0)  # LOCAL_RANK defaults to 0
    assert launched({}) is None  # not launched by torchrun
    assert launched({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) is None  # one process: no group
    assert str(World(1, 2)) == "rank 1 of 2" and World(0, 2).main and not World(1, 2).main
    with pytest.raises(UsageError, match="RANK='one' is not a whole number"):
        launched({"RANK": "one", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="RANK=2 WORLD_SIZE=2 LOCAL_RANK=0 do not describe"):
        launched({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(UsageError, match="WORLD_SIZE=2 is set but RANK is not"):
        launched({"WORLD_SIZE": "2"})


def test_one_process_agrees_with_itself():
    assert first_failure(None) is None
    failure = first_failure(UsageError("bad option"))
    assert (failure.rank, failure.message, failure.usage, failure.everywhere) == \
        (0, "UsageError: bad option", True, True)


# ------------------------------------------------------------------ each rank's share


def test_three_ranks_share_the_batches_one_process_draws(sklearn):
    # digits' 1,077 training images in global batches of 64: 16 full batches and one of 53,
    # cut 22/21/21 and 18/18/17; the train order is torch's own shuffled DataLoader's
    one, one_test = loaders(DIGITS, SHAPE, 10, seed=3)
    ranks = [loaders(DIGITS, SHAPE, 10, seed=3, rank=r, world_size=3, test_batches=4) for r in range(3)]
    for epoch in range(2):  # the generator goes on drawing the next epoch's order alike
        expected = [y for _, y in one]
        shares = [[y for _, y in train] for train, _ in ranks]
        assert [len(s) for s in shares] == [17, 17, 17] and len(expected) == 17
        assert [len(s[0]) for s in shares] == [22, 21, 21] and [len(s[-1]) for s in shares] == [18, 18, 17]
        assert all(torch.equal(torch.cat([s[j] for s in shares]), expected[j]) for j in range(17))
    # the test split in order, cut to 4 global batches: its first 256 labels
    seen = [torch.cat([y for _, y in test]) for _, test in ranks]
    assert [len(s) for s in seen] == [88, 84, 84]  # 4 x 22, 4 x 21, 4 x 21
    order = torch.cat([torch.cat([y for _, y in test_batch]) for test_batch in zip(*[test for _, test in ranks])])
    assert torch.equal(order, torch.cat([y for _, y in one_test])[:256])


def test_a_last_batch_too_small_for_every_rank_is_skipped_everywhere():
    data = TensorDataset(torch.arange(10.0), torch.arange(10))
    # batches of 4: [4, 4, 2]; two ranks would get one example each of the last: it is skipped
    order = BatchSampler(range(10), 4, drop_last=False)
    assert [list(RankBatches(order, r, 2, train=True)) for r in range(2)] == [[[0, 1], [4, 5]], [[2, 3], [6, 7]]]
    assert len(RankBatches(order, 0, 2, train=True)) == 2
    # evaluation keeps every example, and leaves an empty share out
    assert [list(RankBatches(BatchSampler(range(5), 4, False), r, 3, train=False)) for r in range(3)] == \
        [[[0, 1], [4]], [[2]], [[3]]]
    # one process: a lone last example is dropped, as DataLoader(drop_last=len % batch == 1) does
    nine = BatchSampler(range(9), 4, drop_last=False)
    assert list(RankBatches(nine, 0, 1, train=True)) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    with pytest.raises(UsageError, match="batch_size 3 is the global batch, split over 2 processes"):
        shard_loaders(data, data, 0, 2, batch_size=3)
    loader, _ = shard_loaders(data, data, 1, 2, batch_size=4)
    assert [len(y) for _, y in loader] == [2, 2] and isinstance(loader, DataLoader)


# ------------------------------------------------------------------ torchrun, two CPU processes


def _torchrun(recipe, out, folder, **env):
    """``torchrun --standalone --nproc_per_node 2 -m micronet compress`` on CPUs (gloo)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "micronet", "compress", str(recipe), "--out", str(out)]
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=180)


def _mlp_recipe(folder, name, steps, data=True):
    """A recipe on an MLP without BatchNorm (so that two processes can match
    one exactly) with fixed initial weights, digits and ``steps``."""
    net = folder / "net.py"
    if not net.exists():
        net.write_text("from torch import nn\n\n\ndef mlp():\n"
                       "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))\n")
        torch.manual_seed(0)
        torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).state_dict(),
                   folder / "init.pt")
    recipe = folder / name
    table = '[data]\ndataset = "digits"\nbatch_size = 64\n' if data else ""
    recipe.write_text(textwrap.dedent(f"""\
        [model]
        spec = "{net}:mlp"
        weights = "{folder / 'init.pt'}"
        trust = true
        input = [1, 1, 8, 8]
        [score]
        track = "digits"
        """) + table + steps)
    return recipe


def _finetune(epochs, **more):
    lines = [f"{key} = {json.dumps(value)}" for key, value in more.items()]
    return "\n".join(["[[step]]", 'use = "finetune"', f"epochs = {epochs}", "lr = 0.1", 'schedule = "none"',
                      *lines]) + "\n"


def _notes(out, step=1):
    return json.loads((out / "history.json").read_text())[step]["step"]["notes"]


def _weights(out):
    return torch.load(out / "state_dict.pt", weights_only=True)


@pytest.mark.slow
def test_two_processes_train_as_one_with_the_same_global_batch(tmp_path, sklearn):
    # 2 epochs of 17 global batches of 64 digits (the last of 53, cut 27/26 and weighted by
    # share). Tolerance: the ranks sum their gradients in another order than one process
    # does (two means of 32 averaged, not one mean of 64), float32 rounding of ~1e-7 per
    # step; measured: weights within 1.8e-7, the loss equal to 6 digits, top-1 equal.
    recipe = _mlp_recipe(tmp_path, "ddp.toml", _finetune(2, checkpoint_dir="ckpt"))
    ran = _torchrun(recipe, tmp_path / "ddp", tmp_path)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout.count("epoch 1/2") == 1 and ran.stdout.count("written to") == 1  # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-001.pt", "epoch-002.pt"]
    one = compress(_mlp_recipe(tmp_path, "one.toml", _finetune(2)), out=tmp_path / "one")
    ddp, local = _notes(tmp_path / "ddp"), _notes(tmp_path / "one")
    assert (ddp["engine"], ddp["world_size"], local["engine"], local["world_size"]) == ("ddp", 2, "local", 1)
    assert ddp["loss"] == pytest.approx(local["loss"], abs=1e-5) and local["loss"][1] < local["loss"][0] / 3
    assert ddp["top1"] == local["top1"] == round(one.final.accuracy, 4) > 90  # 512 of 540 measured
    first, second = _weights(tmp_path / "ddp"), _weights(tmp_path / "one")
    assert all(torch.allclose(first[k], second[k], rtol=0, atol=1e-5) for k in second)
    # the two-process checkpoint resumes in one process: one more epoch = three epochs straight
    resumed = compress(_mlp_recipe(tmp_path, "more.toml", _finetune(3, checkpoint_dir="ckpt", resume=True)),
                       out=tmp_path / "more")
    straight = compress(_mlp_recipe(tmp_path, "three.toml", _finetune(3)), out=tmp_path / "three")
    assert resumed.steps[0].notes["loss"][:2] == ddp["loss"] and len(resumed.steps[0].notes["loss"]) == 3
    assert resumed.steps[0].notes["loss"] == pytest.approx(straight.steps[0].notes["loss"], abs=1e-5)
    third, fourth = _weights(tmp_path / "more"), _weights(tmp_path / "three")
    assert all(torch.allclose(third[k], fourth[k], rtol=0, atol=1e-5) for k in fourth)


CRASHING_PLUGIN = '''\
"""Steps that fail on one rank only: in the step, or inside training's backward pass."""
import os

import torch
from torch import nn

from micronet.manager import hookimpl
from micronet.steps import CompressionStep, StepOption
from micronet.training.train import TrainConfig, fit


def crash(model, options, context):
    if int(os.environ.get("RANK", "0")) == options["rank"]:
        raise RuntimeError(f"boom on rank {options['rank']}")
    return model


class FailingBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        raise RuntimeError("backward failed on rank 1")


class Bomb(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        out = self.inner(x)
        return FailingBackward.apply(out) if os.environ.get("RANK") == "1" else out


def crash_in_backward(model, options, context):
    fit(Bomb(model), context.data, TrainConfig(batch_size=8, max_batches_per_epoch=2, progress=False),
        input_shape=context.input_shape, num_classes=10, log=context.log)
    return model


@hookimpl
def micronet_register_steps():
    return [CompressionStep("crash", "fails on one rank", crash, (StepOption("rank", (int,), 1, "which"),)),
            CompressionStep("crash_in_backward", "fails in rank 1's backward pass", crash_in_backward)]
'''


def _crashing_plugin(folder):
    """A plugin package found through a file-based entry point (a .dist-info
    folder on PYTHONPATH), as an installed one would be."""
    site = folder / "site"
    info = site / "micronet_crashing-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: micronet-crashing\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[micronet]\ncrashing = micronet_crashing\n")
    (site / "micronet_crashing.py").write_text(CRASHING_PLUGIN)
    return site


def _errors(ran):
    return [line for line in ran.stderr.splitlines() if line.startswith("micronet: error:")]


@pytest.mark.slow
def test_a_rank_that_fails_ends_the_run_with_one_error_and_a_whole_out_folder(tmp_path, sklearn):
    site, out = _crashing_plugin(tmp_path), tmp_path / "out"
    compress(_mlp_recipe(tmp_path, "before.toml", _finetune(1, max_batches=2)), out=out)  # a previous run
    # rank 1 fails in a step: every rank learns it after the step, rank 0 writes the run up to it
    recipe = _mlp_recipe(tmp_path, "crash.toml", _finetune(1, max_batches=2) + '[[step]]\nuse = "crash"\n'
                         + _finetune(1))
    ran = _torchrun(recipe, out, tmp_path, PYTHONPATH=str(site))
    assert ran.returncode != 0 and "epoch 1/1" in ran.stdout and "step 3/3" not in ran.stdout
    assert _errors(ran) == ["micronet: error: step 2 ('crash', plugin 'crashing') failed: RuntimeError: boom on "
                            "rank 1 (on rank 1 of 2) (hint: the results up to this step are kept; the input "
                            "model is untouched)"]
    steps = [entry["step"] for entry in json.loads((out / "history.json").read_text())[1:]]
    assert [(s["name"], s["error"]) for s in steps] == [("finetune", None),
                                                         ("crash", "RuntimeError: boom on rank 1 (on rank 1 of 2)")]
    assert (steps[0]["notes"]["engine"], steps[0]["notes"]["world_size"]) == ("ddp", 2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging, no lock
    # rank 1 fails inside its backward pass, where rank 0 waits for it: the run ends, --out keeps the run before
    previous = {path.name: path.read_bytes() for path in out.iterdir()}
    recipe = _mlp_recipe(tmp_path, "backward.toml", '[[step]]\nuse = "crash_in_backward"\n', data=False)
    ran = _torchrun(recipe, out, tmp_path, PYTHONPATH=str(site))
    assert ran.returncode != 0
    assert any(line.startswith("micronet: error: rank 1 of 2 failed inside data-parallel training") and
               "RuntimeError: backward failed on rank 1" in line for line in _errors(ran)), ran.stderr[-3000:]
    assert {path.name: path.read_bytes() for path in out.iterdir()} == previous
