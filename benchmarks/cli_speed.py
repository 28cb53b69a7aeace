"""How long does ``micronet audit`` take next to ``python -c "import torch"``?

Run by hand (see benchmarks/README.md)::

    .venv/bin/python benchmarks/cli_speed.py                    # best of 5
    .venv/bin/python benchmarks/cli_speed.py --repeat 9 --model micronet:wrn_28_10

Each run is a fresh interpreter (``subprocess.run``, wall time by ``time.perf_counter``
around it, output discarded); the two commands alternate (torch, audit, torch, audit,
...) so that load from other processes hits both alike; the best of ``--repeat`` runs
of each is kept. The goal: the audit within ``import torch`` + 1 s.

Bytecode: like an installed package, the runs read micronet's compiled ``.pyc`` files,
written on a first untimed run to a temporary ``PYTHONPYCACHEPREFIX`` (nothing goes
into the checkout). With ``PYTHONDONTWRITEBYTECODE`` set and no cache, as in some
development shells, every run compiles micronet's sources again (about 0.4 s on a
2-core machine); ``--no-bytecode`` measures that case.

A third line lists the heavy libraries the audit left imported (none is the goal):
torchvision (1.7 s, it imports torch._dynamo), Torch-Pruning (0.7 s, with timm),
sympy (0.5 s, which ``torch.broadcast_shapes`` imports on its first call).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

HEAVY = ("torchvision", "torch._dynamo", "torch_pruning", "timm", "transformers", "sklearn", "sympy")
GOAL_S = 1.0  # the audit may take this much longer than `import torch`


def _environment(pycache: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("PYTHONPYCACHEPREFIX", None)
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache
    return env


def _time(argv: list[str], env: dict[str, str], cwd: str) -> float:
    """Wall seconds of one fresh interpreter running ``argv``; fails on a non-zero exit."""
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def _left_imported(model: str, env: dict[str, str], cwd: str) -> list[str]:
    """The HEAVY modules in sys.modules after the CLI's audit of ``model``."""
    code = ("import contextlib, io, sys\nfrom micronet.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()):\n    main(['audit', {model!r}])\n"
            f"print(','.join(n for n in {HEAVY!r} if n in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True,
                          check=True)
    return [name for name in done.stdout.strip().split(",") if name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="micronet:resnet18_cifar", help="model spec to audit")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command; the best counts")
    parser.add_argument("--no-bytecode", action="store_true",
                        help="PYTHONDONTWRITEBYTECODE=1 and no cache: micronet compiled on every run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="micronet-cli-speed-") as work:
        env = _environment(None if args.no_bytecode else os.path.join(work, "pycache"))
        torch_cmd = [sys.executable, "-c", "import torch"]
        audit_cmd = [sys.executable, "-m", "micronet", "audit", args.model]
        _time(audit_cmd, env, work)  # untimed: writes the bytecode cache, warms the disk cache
        torch_runs, audit_runs = [], []
        for _ in range(args.repeat):
            torch_runs.append(_time(torch_cmd, env, work))
            audit_runs.append(_time(audit_cmd, env, work))
        left = _left_imported(args.model, env, work)

    best_torch, best_audit = min(torch_runs), min(audit_runs)
    difference = best_audit - best_torch
    bytecode = "no bytecode cache" if args.no_bytecode else "bytecode cached"
    print(f"python -c 'import torch'        best of {args.repeat}: {best_torch:6.2f} s  "
          f"(runs: {' '.join(f'{t:.2f}' for t in torch_runs)})")
    print(f"micronet audit {args.model:16s} best of {args.repeat}: {best_audit:6.2f} s  "
          f"(runs: {' '.join(f'{t:.2f}' for t in audit_runs)}; {bytecode})")
    print(f"difference {difference:+.2f} s, ratio {best_audit / best_torch:.2f}x; "
          f"heavy modules left imported: {', '.join(left) or 'none'}")
    ok = difference <= GOAL_S and not left
    print(f"{'PASS' if ok else 'FAIL'}: audit within import torch + {GOAL_S:.0f} s "
          f"and no heavy library imported")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
