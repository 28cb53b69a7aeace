"""What every subcommand of the command line reads from its arguments the same
way: the model's inputs (``--input`` / ``--inputs``) and the registries."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manager import Registries


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The options saying how a model is audited (inputs, track, rulebook,
    trust, bit widths, freebie), the same for ``audit`` and ``diff``."""
    parser.add_argument("--input", metavar="[NAME=]SHAPE[:DTYPE]", action="append",
                        help="input shape, e.g. 1x3x32x32 (default: the model's own, else the track's "
                        "image size at batch 1); repeat for a forward taking several inputs, in order "
                        "or by parameter name, with a dtype: --input 1x128:int64 --input attention_mask=1x128")
    parser.add_argument("--inputs", metavar="FILE.py:FUNCTION",
                        help="a function returning the inputs (shapes, tensors, (shape, dtype) pairs or a "
                        "dict of them), for what --input cannot say; runs that code, so needs --trust")
    parser.add_argument("--input-dtype", metavar="DTYPE",
                        help="dtype of the input: float32, float16, bfloat16, int64 (token ids), ... "
                        "(default: int64 for a model starting with an embedding, else its parameters')")
    parser.add_argument("--track", default="cifar100", help="challenge track (default: cifar100)")
    parser.add_argument("--rulebook", default="micronet-2019", help="counting rules (default: micronet-2019)")
    parser.add_argument("--trust", action="store_true",
                        help="allow what runs code: pickled whole modules, module or file.py specs, --inputs")
    parser.add_argument("--bits", action="append", default=[], metavar="PATTERN=N",
                        help="weight bits for layers matching a glob, e.g. 'features.*=8' (repeatable)")
    parser.add_argument("--act-bits", action="append", default=[], metavar="PATTERN=N",
                        help="activation bits for layers matching a glob, e.g. '*=8' (repeatable)")
    parser.add_argument("--accumulator-bits", type=int, default=32, metavar="N",
                        help="width of dot-product accumulators (default 32)")
    parser.add_argument("--no-freebie", dest="freebie", action="store_false",
                        help="do not count unquantized params and mults at 16 bits")


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
