"""The ``micronet`` command line: ``micronet audit SPEC ...``.

Errors print one line (exit 2 for usage errors, 1 otherwise); ``--debug``
shows the traceback instead. Each command builds the plugins' registries
once (:class:`~micronet.manager.Registries`: a fresh plugin manager, about
10 ms) and hands them to everything it calls: ``audit``, ``compress``, the
report sections, the plugin listing. Nothing here reads a process-wide
registry.
"""
from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from typing import Sequence

from .cli_common import add_model_options, audit_inputs, registries_of
from .cli_diff import add_budget_options, add_diff_command, check_budget_options, finish_audit
from .errors import MicronetError
from .manager import Registries, hookimpl
from .text import positive_int, printable

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="micronet",
        description="MicroNet Challenge scores of any PyTorch model, layer by layer.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    audit = commands.add_parser("audit", help="score a model per layer under a rulebook and track",
                                description="Score a model per layer (MicroNet ops and storage).")
    audit.add_argument("spec", help="model spec: resnet18, torchvision:mobilenet_v2?width_mult=1.4, "
                       "micronet:wrn_28_10, pkg.module:factory, file.py:factory, or a saved file")
    add_model_options(audit)
    audit.add_argument("--per-token", type=positive_int, metavar="T",
                       help="language models: audit a prefill of T tokens (shown per token, /T) and one decode "
                       "step after T tokens (a key/value cache of T, or a recurrent state); the decode step is "
                       "scored (ops per token, online: the wikitext103 rule)")
    audit.add_argument("--weights", metavar="FILE", help="state dict to load into the model")
    audit.add_argument("--strict", action="store_true", help="fail on any node without a counter")
    audit.add_argument("--data", metavar="DATASET",
                       help="measure top-1 on the test split: digits (scikit-learn's, offline), "
                       "cifar10:PATH, cifar100:PATH, imagefolder:PATH or fake "
                       "(needs --weights or a model with weights)")
    audit.add_argument("--what-if", metavar="GRID",
                       help="re-score under uniform levels, e.g. 'bits=32,16,8,4;sparsity=0,0.5,0.9'")
    audit.add_argument("--json", metavar="FILE", help="write the audit as JSON")
    audit.add_argument("--csv", metavar="FILE", help="write the per-layer rows as CSV")
    audit.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (table, charts, graph)")
    audit.add_argument("--all", dest="show_free", action="store_true", help="show free nodes in the table")
    audit.add_argument("--top", type=positive_int, metavar="N", help="show only the N layers with the largest share")
    audit.add_argument("--quiet", action="store_true", help="print only the score line")
    add_budget_options(audit)
    audit.set_defaults(run=run_audit)

    compress = commands.add_parser("compress", help="run a compression recipe, re-scoring after each step",
                                   description="Run a TOML recipe's steps in order; each result is kept.")
    compress.add_argument("recipe", help="recipe file (TOML)")
    compress.add_argument("--out", metavar="DIR", help="write history.json, per-step tables and the final model")
    compress.add_argument("--html", metavar="FILE",
                          help="write a self-contained HTML report of the steps (also when one fails)")
    compress.add_argument("--trust", action="store_true",
                          help="let the recipe run code: module:factory and file.py:factory specs, "
                          "pickled files (as the recipe's trust = true does)")
    compress.add_argument("--data", metavar="DATASET",
                          help="read this dataset instead of the recipe's [data] dataset: cifar10:PATH, "
                               "cifar100:PATH, imagefolder:PATH, digits or fake")
    compress.add_argument("--quiet", action="store_true", help="print only the score after each step")
    compress.set_defaults(run=run_compress)

    plugins = commands.add_parser("plugins", help="list plugins, their origin and what they registered")
    plugins.add_argument("--verbose", "-v", action="store_true", help="list every counter target too")
    plugins.set_defaults(run=run_plugins)
    add_diff_command(commands)
    return parser


def run_audit(args: argparse.Namespace) -> int:
    from .audit import UncountedWarning, audit
    from .outdir import check_output_file
    from .reports import render_table, render_what_if, write_csv, write_json

    from .whatif import parse_what_if

    for option in ("json", "csv", "html"):  # before any work, not after it
        check_output_file(getattr(args, option), f"--{option}")
    bounds = check_budget_options(args)  # budgets and --markdown: a bad number fails before any work
    levels = parse_what_if(args.what_if) if args.what_if else None
    registries = registries_of(args)
    _mention_failed_plugins(registries)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UncountedWarning)  # the table lists them itself
        input_shape, inputs = audit_inputs(args)
        per_token = None
        options = dict(weights=args.weights, trust=args.trust, registries=registries, bits=args.bits,
                       act_bits=args.act_bits, accumulator_bits=args.accumulator_bits, freebie=args.freebie,
                       strict=args.strict, data=args.data, input_shape=input_shape, inputs=inputs,
                       input_dtype=args.input_dtype)
        if args.per_token:  # the inputs are T token ids, then one: --input/--inputs/--data are refused there
            from .per_token import audit_per_token

            per_token = audit_per_token(args.spec, args.per_token, args.track, args.rulebook, **options)
            result = per_token.result
        else:
            result = audit(args.spec, track=args.track, rulebook=args.rulebook, **options)
    grid = result.what_if(levels) if levels else None
    sections = registries.report_sections
    if per_token is not None:  # both per-token figures: in the table, the JSON's sections and the HTML page
        from .per_token import per_token_section

        sections = {**sections, "per-token": per_token_section(per_token)}
    if args.quiet:
        print(f"{result.score.total:.6f}")
    else:
        print(render_table(result, show_free=args.show_free, top=args.top, sections=sections))
        if grid is not None:
            print(f"\nwhat-if ({result.rulebook.name}, {result.track.name}): score per configuration")
            print(render_what_if(grid))
    if args.json and per_token is not None:
        from .per_token import write_per_token_json

        write_per_token_json(per_token, args.json, grid, sections)
    elif args.json:
        write_json(result, args.json, grid, sections)
    if args.csv:
        write_csv(result, args.csv)
    if args.html:
        from .reports.html import write_audit_html

        write_audit_html(result, args.html, what_if=grid, sections=sections)
    return finish_audit(result, args, bounds)  # --markdown, and 1 when a budget is broken


class _KeepHistory:
    """An observer plugin that keeps the History handed to
    ``micronet_pipeline_finished`` (which runs before a failing step's error
    is raised), so ``--html`` can report the steps that ran."""

    history = None

    @hookimpl
    def micronet_pipeline_finished(self, history):
        self.history = history


def run_compress(args: argparse.Namespace) -> int:
    """``compress``; under torchrun inside the process group (joined before the
    run, left after it), rank 0 reporting and the other ranks silent."""
    from .training.distributed import launched, process_group

    with process_group(launched()) as world:
        if world is None or world.main:
            return _compress_and_report(args)
        return _compress_silently(args, world)


def _recipe(args: argparse.Namespace):
    """The recipe file, read and checked, with ``--data`` in place of its dataset."""
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe)
    return recipe.with_dataset(args.data) if args.data else recipe


def _compress_silently(args: argparse.Namespace, world) -> int:
    """A rank other than 0: the same run, printing and writing nothing; an
    error rank 0 reports for every rank is left to it to print."""
    from .pipeline import compress
    from .training.distributed import REPORTED, RanksOutOfStep

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank 0 shows the same warnings
            compress(_recipe(args), out=args.out, registries=registries_of(args), trust=args.trust)
    except MicronetError as error:
        if getattr(error, REPORTED, False):
            return error.exit_code
        if isinstance(error, RanksOutOfStep):  # its message names the rank
            raise
        tagged = MicronetError(f"{world}: {error}")
        tagged.exit_code = error.exit_code
        raise tagged from error
    return 0


def _compress_and_report(args: argparse.Namespace) -> int:
    from .outdir import check_output_file
    from .pipeline import compress

    check_output_file(args.html, "--html")  # --out is checked and locked by compress, before any work
    log = (lambda message: None) if args.quiet else (lambda message: print(printable(message), flush=True))
    registries = registries_of(args)
    _mention_failed_plugins(registries)
    keeper = _KeepHistory()
    registries.pm.register(keeper)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each warning once per place, as Python does
            warnings.simplefilter("ignore", DeprecationWarning)  # libraries' own, not the recipe's
            history = compress(_recipe(args), out=args.out, log=log, registries=registries, trust=args.trust,
                               progress=not args.quiet)  # bars on a terminal's stderr, none under --quiet
    except MicronetError:
        if keeper.history is not None:
            if not args.quiet:
                _print_step_details(keeper.history, args)
            if args.html:
                _write_pipeline_page(keeper.history, args.html, registries)
                print(f"micronet: the report of the steps that ran is in {args.html}", file=sys.stderr)
        raise
    finally:
        registries.pm.unregister(keeper)
    if args.html:
        _write_pipeline_page(history, args.html, registries)
    if not args.quiet:
        _print_step_details(history, args)
    measured = history.input.accuracy is not None
    print(f"{'step':<28}{'score':>10}{'storage':>10}{'ops':>10}" + (f"{'top-1':>9}" if measured else ""))
    rows = [("input", history.input)] + [(s.label, s.result) for s in history.steps]
    unchanged = {s.label for s in history.steps if not s.changed}
    for label, result in rows:
        score = result.score
        note = "  (changed nothing)" if label in unchanged else ""
        top1 = f"{result.accuracy:>8.2f}%" if result.accuracy is not None else ""
        print(f"{printable(label):<28}{score.total:>10.4f}{score.storage_term:>10.4f}{score.ops_term:>10.4f}"
              f"{top1}{note}")
    print(_verdict(history.final))
    if args.out:
        print(f"written to {args.out}/")
    if args.html:
        print(f"report written to {args.html}")
    return 0


def _print_step_details(history, args: argparse.Namespace) -> None:
    """What a sensitivity step measured (its most sensitive layers) and what a
    search step chose (each layer's setting, predicted against achieved), one
    block per such step, before the table of scores."""
    from .reports.search import search_text
    from .reports.sensitivity import sensitivity_text

    places = [f"{args.out}/history.json" if args.out else "", args.html or ""]
    where = " and ".join(place for place in places if place) or \
        "history.json (--out DIR) and the HTML page (--html FILE)"
    before, shown = history.input, False
    for step in history.steps:
        lines = sensitivity_text(step.notes, where=where) + search_text(step, before, where=where)
        if lines:
            print(f"\n{printable(step.label)}: {lines[0]}")
            print("\n".join(lines[1:]))
            shown = True
        before = step.result if step.result is not None else before
    if shown:
        print()


def _verdict(final) -> str:
    """The last line: whether the final model still qualifies for its track
    (top-1 at least the bar, or a perplexity at most the bar)."""
    track = final.track
    if final.accuracy is None:
        measured = "accuracy" if track.higher_is_better else track.metric
        return (f"{measured} was not measured (no [data] table): the score counts only if "
                f"{track.bar_text()} on {track.name}")
    if final.meets_bar:
        return f"the final model qualifies: {track.compare_text(final.accuracy)} ({track.name})"
    return f"the final model does NOT qualify: {track.compare_text(final.accuracy)} ({track.name})"


def _mention_failed_plugins(registries) -> None:
    """One line per plugin left out (it failed to load or to register)."""
    for name, error in registries.failed_plugins:
        print(f"micronet: warning: plugin {printable(name)} failed to load and is left out: "
              f"{printable(error)} (`micronet plugins` lists them)", file=sys.stderr)


def _write_pipeline_page(history, path: str, registries) -> None:
    from .reports.html import write_pipeline_html

    write_pipeline_html(history, path, sections=registries.report_sections)


def run_plugins(args: argparse.Namespace) -> int:
    from .manager import describe_plugins

    registries = registries_of(args)
    for info in describe_plugins(registries.pm):
        version = f" {info.version}" if info.version else ""
        print(f"{info.name}{version}  [{info.origin}]")
        if info.error:
            print(f"    failed to load: {info.error}")
        for kind, names in info.registered.items():
            if not names:
                continue
            shown = names if args.verbose or kind != "counters" else names[:6]
            more = f" ... (+{len(names) - len(shown)}, -v for all)" if len(shown) < len(names) else ""
            print(f"    {kind} ({len(names)}): {', '.join(shown)}{more}")
    return 0


def main(argv: Sequence[str] | None = None, *, registries: Registries | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Errors and warnings print one line each (``micronet: error: ...``,
    ``micronet: warning: ...``), unprintable characters escaped.
    ``registries`` (tests, programs embedding the CLI) are the plugins the
    command uses; by default it builds them from the installed plugins."""
    parser = build_parser()
    args = parser.parse_args(argv)

    def show_warning(message, category, *where, **more):
        print(f"micronet: warning: {printable(message)}", file=sys.stderr)

    with warnings.catch_warnings():
        if not args.debug:
            warnings.showwarning = show_warning
        try:
            args.registries = registries
            return args.run(args)
        except MicronetError as error:
            if args.debug:
                raise
            print(f"micronet: error: {printable(error)}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print("micronet: interrupted", file=sys.stderr)
            return 130
        except Exception as error:  # an internal failure: one line, the rest with --debug
            if args.debug:
                raise
            where = traceback.extract_tb(error.__traceback__)[-1]
            print(f"micronet: internal error: {type(error).__name__}: {printable(error)} "
                  f"(at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}; rerun with --debug)", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
