"""What every subcommand of the command line reads from its arguments the same
way: the model's inputs (``--input`` / ``--inputs``) and the registries."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manager import Registries


def audit_inputs(args: argparse.Namespace):
    """``(input_shape, inputs)`` for ``audit()`` from ``--input`` / ``--inputs``:
    one plain ``--input SHAPE`` stays an input shape, as it always was."""
    from .errors import UsageError
    from .inputs import load_inputs, parse_input

    if args.inputs and args.input:
        raise UsageError("give --input or --inputs, not both", hint="put every input in the --inputs function")
    if args.inputs:
        return None, load_inputs(args.inputs, trust=args.trust)
    if not args.input:
        return None, None
    if len(args.input) == 1 and "=" not in args.input[0] and ":" not in args.input[0]:
        return args.input[0], None
    return None, tuple(parse_input(text) for text in args.input)


def registries_of(args: argparse.Namespace) -> "Registries":
    """The command's registries: those ``main`` was given, else built now
    from the installed plugins (once per command)."""
    from .manager import Registries

    return getattr(args, "registries", None) or Registries.from_manager()
