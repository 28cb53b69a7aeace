"""The command line's budget flags (``micronet audit --fail-above SCORE
--max-params N --max-macs N --markdown FILE``) and ``micronet diff A B``.

A broken bound prints one line per bound (``micronet: over budget: ...``)
and exits 1; a malformed number is a usage error (one line, exit 2),
reported before any work.
"""
from __future__ import annotations

import argparse
import sys

from .text import positive_int, printable

__all__ = ["add_budget_options", "check_budget_options", "finish_audit", "add_diff_command", "run_diff"]

_BOUNDS = (("fail_above", "--fail-above", "score"), ("max_params", "--max-params", "params"),
           ("max_macs", "--max-macs", "macs"))


def add_budget_options(audit: argparse.ArgumentParser) -> None:
    """``--fail-above``, ``--max-params``, ``--max-macs`` and ``--markdown`` on ``audit``."""
    audit.add_argument("--fail-above", metavar="SCORE",
                       help="exit 1 when the score is above SCORE (naming the layers that weigh most)")
    audit.add_argument("--max-params", metavar="N", help="exit 1 above N parameters (e.g. 1.5M, 2e6)")
    audit.add_argument("--max-macs", metavar="N", help="exit 1 above N multiply-accumulates (e.g. 300M, 2e9)")
    audit.add_argument("--markdown", metavar="FILE",
                       help="write a Markdown summary (score card and the --top N layers, default 10) for a model card or a PR")


def check_budget_options(args: argparse.Namespace) -> dict[str, float]:
    """The bounds asked for (``assert_budget`` keywords), parsed before any
    work: a malformed number is a UsageError naming its option."""
    from .budget import parse_amount
    from .outdir import check_output_file

    check_output_file(args.markdown, "--markdown")
    return {quantity: parse_amount(getattr(args, dest), option)
            for dest, option, quantity in _BOUNDS if getattr(args, dest) is not None}


def finish_audit(result, args: argparse.Namespace, bounds: dict[str, float]) -> int:
    """Write ``--markdown``; the exit code: 1 with one line per broken bound, else 0."""
    from .budget import check_budget

    if args.markdown:
        from .markdown import write_markdown

        write_markdown(result, args.markdown, top=args.top or 10)
    violations = check_budget(result, **bounds)
    for violation in violations:
        print(f"micronet: over budget: {violation.line()}", file=sys.stderr)
    return 1 if violations else 0


def add_diff_command(commands) -> None:
    """The ``diff`` subcommand."""
    from .cli_common import add_model_options

    diff = commands.add_parser(
        "diff", help="compare two audits: totals, score and the layers that changed",
        description="Compare two audits. A and B are audit JSON files (micronet audit --json), "
                    "history.json entries (out/history.json#2 by index, #NAME by step name, #input, "
                    "#final; the bare file is its final entry) or model specs, audited with the options below.")
    diff.add_argument("before", metavar="A", help="the audit before: FILE.json, history.json#ENTRY or a model spec")
    diff.add_argument("after", metavar="B", help="the audit after, as A")
    add_model_options(diff)  # for A or B given as model specs
    diff.add_argument("--json", metavar="FILE", help="write the diff as JSON")
    diff.add_argument("--html", metavar="FILE", help="write the diff as a self-contained HTML page")
    diff.add_argument("--top", type=positive_int, metavar="N", help="print only the N largest changes")
    diff.add_argument("--fail-above-delta", metavar="X",
                      help="exit 1 when the score grew by more than X (score units, e.g. 0.001) or X%% "
                           "of the score before (e.g. 2%%)")
    diff.set_defaults(run=run_diff)


def run_diff(args: argparse.Namespace) -> int:
    """``micronet diff A B``: prints the diff; 1 when ``--fail-above-delta`` is passed."""
    import json
    import warnings

    from .audit import UncountedWarning
    from .cli_common import audit_inputs, registries_of
    from .diff import diff_audits, load_audit, parse_delta
    from .outdir import check_output_file
    from .reports.json_report import clean

    limit = parse_delta(args.fail_above_delta) if args.fail_above_delta is not None else None
    for option in ("json", "html"):
        check_output_file(getattr(args, option), f"--{option}")
    input_shape, inputs = audit_inputs(args)
    options = dict(input_shape=input_shape, inputs=inputs, track=args.track, rulebook=args.rulebook,
                   trust=args.trust, bits=args.bits, act_bits=args.act_bits,
                   accumulator_bits=args.accumulator_bits, freebie=args.freebie, input_dtype=args.input_dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncountedWarning)
        registries = None
        documents = []
        for source in (args.before, args.after):
            if not str(source).partition("#")[0].endswith(".json") and registries is None:
                registries = registries_of(args)
            documents.append(load_audit(source, registries=registries, **options))
    diff = diff_audits(*documents)
    print(diff.text(args.top))
    if args.json:
        from .fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(clean(diff.to_dict()), indent=1) + "\n")
    if args.html:
        from .reports.diffpage import write_diff_html

        write_diff_html(diff, args.html)
    if limit is not None and diff.exceeds(limit):
        value, relative = limit
        print(f"micronet: the score grew by {diff.score_delta:+.6g}, more than the allowed "
              f"{value:g}{'%' if relative else ''}: {printable(args.before)} -> {printable(args.after)}",
              file=sys.stderr)
        return 1
    return 0
