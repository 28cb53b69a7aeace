"""Reading ``torch.export`` archives (``.pt2``) without running code from them.

The threat: ``torch.export.load`` trusts its archive. In torch 2.14 a crafted
``.pt2`` runs code while it loads, or when its module first runs, through:

- weights and tensor constants flagged ``use_pickle`` (how torch stores a
  tensor subclass): ``torch.load(weights_only=False)``;
- object constants: ``pickle.loads`` (``opaque_obj_*``) or TorchScript's
  unpickler (``custom_obj_*``);
- the sample inputs (``data/sample_inputs/model.pt``): ``torch.load``, which
  falls back to ``weights_only=False``; so do the pickled state dict and
  constants of older layouts;
- symbolic shapes: each ``expr_str`` goes to ``sympy.sympify``, which
  evaluates Python;
- input/output specs: a pytree context may name an enum or a
  ``defaultdict`` factory, and torch imports that module;
- ``guards_code``: strings compiled into the module's forward (when the
  sample inputs are present);
- AOTInductor members: shared libraries loaded into the process.

The rule, without ``trust``: the archive is read with torch's own reader
and :func:`load_export` hands torch's archive loader (``load_pt2``, what
``torch.export.load`` runs) a checked copy holding only the program
``models/model.json``, its weights and tensor constants as raw bytes (read
as plain tensor storage: nothing is unpickled), empty sample inputs
(counting never needs them: the graph's placeholders carry the input
shapes), no guards, and the extra files asked for. A pickled weight or
constant, an older pickled layout, a symbolic shape that is not plain
arithmetic (numbers, size symbols, sympy and torch shape functions) or a
spec that would import a module is refused with a one-line
:class:`~micronet.errors.SpecError` naming ``--trust``; nothing else in the
archive (AOTInductor, ExecuTorch, other programs) is read. Graph nodes
are left to torch's verifier, which refuses any target that is not an
operator (``os.system`` reached as ``torch.serialization.os.system``). With
``trust`` the file goes to ``torch.export.load`` as it is.
"""
from __future__ import annotations

import ast
import json
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator, MutableMapping

import torch

from .errors import SpecError

__all__ = ["is_export_archive", "load_export", "save_export", "unsavable_ops", "expression_problem", "HINT_TRUST"]

HINT_TRUST = "pass --trust (recipe: trust = true) only for an archive from a source you trust"
HINT_FORMAT = "expected a file written by torch.export.save"
#: The program ``torch.export.load`` returns; others in the archive are not read.
PROGRAM = "model"
#: Member names an archive's configs may point at (no folders, no '..').
MEMBER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Size symbols of torch.export (s0, u1, zuf2, ...) and the sympy constants.
SYMBOL = re.compile(r"[a-z]+[0-9]+")
CONSTANTS = frozenset({"oo", "zoo", "nan", "true", "false", "pi", "E", "I"})
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)
#: ast nodes a symbolic shape may hold besides calls, names and constants.
OPERATORS = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.Tuple, ast.Load, ast.keyword,
             ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
             ast.BitAnd, ast.BitOr, ast.BitXor, ast.USub, ast.UAdd, ast.Not, ast.Invert,
             ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)


def is_export_archive(path: Path) -> bool:
    """A ``.pt2`` file, or a zip holding an ``archive_format`` record (any name)."""
    if path.suffix == ".pt2":
        return True
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.rpartition("/")[2] == "archive_format" for n in archive.namelist())


def load_export(path: Path, *, trust: bool, extra_files: MutableMapping[str, str]):
    """The ``ExportedProgram`` in ``path``; ``extra_files`` is filled like
    ``torch.export.load`` fills it. Without ``trust`` only a checked copy
    reaches torch (see the module docstring). Raises a one-line SpecError."""
    reader = _open(path, trust)
    if reader is None or trust:
        with open(path, "rb") as file:
            return _loaded(lambda: torch.export.load(file, extra_files=extra_files), path.name)
    from torch.export.pt2_archive import PT2ArchiveWriter
    # what torch.export.load runs, without its fallback to the older (pickled) layout
    # and the traceback it logs before falling back
    from torch.export.pt2_archive._package import load_pt2

    with tempfile.TemporaryFile(prefix="micronet-pt2-") as scratch:
        with PT2ArchiveWriter(scratch) as writer:
            for name, data in _checked_members(reader, path.name, extra_files):
                writer.write_bytes(name, data)
        scratch.seek(0)
        contents = _loaded(lambda: load_pt2(scratch), path.name)
    extra_files.update(contents.extra_files)
    return contents.exported_programs[PROGRAM]


#: Higher-order ops torch.export.save cannot serialise (torch 2.14: a
#: ``flex_attention`` node's score_mod / mask_mod subgraphs and its block-mask
#: tuple fail in its serialiser), by the name ``str(op)`` gives.
UNSAVABLE = frozenset({"flex_attention", "flex_attention_backward"})


def unsavable_ops(exported: Any) -> list[str]:
    """Names of the ops in ``exported`` (an ``ExportedProgram``) that
    ``torch.export.save`` cannot write, in graph order, without repeats."""
    found: dict[str, None] = {}
    for module in exported.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
            if node.op == "call_function" and isinstance(node.target, torch._ops.HigherOrderOperator) \
                    and node.target.name() in UNSAVABLE:
                found[node.target.name()] = None
    return list(found)


def save_export(exported: Any, file: Any, extra_files: dict[str, str] | None = None) -> None:
    """``torch.export.save(exported, file, extra_files=...)``, or a one-line
    SpecError when torch cannot write the program: a model calling
    ``flex_attention`` is refused up front (torch's serialiser fails on it
    with a dump of the node), any other failure is said in one line."""
    ops = unsavable_ops(exported)
    if ops:
        raise SpecError(f"torch {torch.__version__.split('+')[0]} cannot save this model as a .pt2 archive: "
                        f"torch.export.save does not serialise {', '.join(ops)}",
                        hint="keep its weights (state_dict.pt) and audit the model itself, not an archive")
    try:
        torch.export.save(exported, file, extra_files=extra_files)
    except Exception as error:
        raise SpecError(f"torch.export cannot save this model as a .pt2 archive ({_short(error)})",
                        hint="keep its weights (state_dict.pt) and audit the model itself") from error


def _loaded(load: Callable[[], Any], where: str) -> Any:
    try:
        return load()
    except Exception as error:
        raise SpecError(f"cannot load the torch.export archive {where}: {_short(error)}",
                        hint=HINT_FORMAT) from error


def _short(error: BaseException) -> str:
    """One short line about ``error`` (torch's reader errors run to paragraphs)."""
    lines = str(error).strip().splitlines()
    text = lines[0].split(". ")[0] if lines else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _open(path: Path, trust: bool):
    """torch's reader on ``path``; None for an older (pre-2.7) layout when trusted."""
    if not zipfile.is_zipfile(path):
        raise SpecError(f"cannot read {path.name}: not a zip file (truncated, or not a torch.export archive)",
                        hint=HINT_FORMAT)
    try:
        from torch.export.pt2_archive import PT2ArchiveReader
        from torch.export.pt2_archive.constants import ARCHIVE_VERSION_PATH, ARCHIVE_VERSION_VALUE
    except ImportError as error:  # a torch older than the pt2 archive format
        if trust:
            return None
        raise SpecError(f"this torch ({torch.__version__}) cannot read {path.name} without unpickling it",
                        hint=HINT_TRUST) from error
    try:
        reader = PT2ArchiveReader(str(path))
        version = reader.read_string(ARCHIVE_VERSION_PATH)
    except Exception as error:
        with zipfile.ZipFile(path) as archive:
            legacy = "serialized_exported_program.json" in archive.namelist()
        if legacy and trust:
            return None
        if legacy:
            raise SpecError(f"{path.name} is a torch.export archive of an older layout, whose weights, "
                            "constants and sample inputs are pickles",
                            hint="re-save it with torch.export.save, or " + HINT_TRUST) from error
        raise SpecError(f"{path.name} is a zip file but not a readable torch.export archive "
                        f"({_short(error)})", hint=HINT_FORMAT) from error
    if version != ARCHIVE_VERSION_VALUE:
        raise SpecError(f"{path.name} has archive version {version[:20]!r}; this torch reads "
                        f"{ARCHIVE_VERSION_VALUE!r}", hint="re-save it with this torch's torch.export.save")
    return reader


# ------------------------------------------------------------------ members


def _checked_members(reader, where: str, extra_files) -> Iterator[tuple[str, bytes]]:
    """The members of the copy handed to torch, each checked (SpecError otherwise)."""
    from torch.export.pt2_archive import constants as pt2

    names = set(reader.get_file_names())
    program = pt2.MODELS_FILENAME_FORMAT.format(PROGRAM)
    if program not in names:
        raise SpecError(f"{where} holds no exported program ({program})", hint=HINT_FORMAT)
    for legacy in (f"{pt2.WEIGHTS_DIR}{PROGRAM}.pt", f"{pt2.CONSTANTS_DIR}{PROGRAM}.pt"):
        if legacy in names:
            raise SpecError(f"{where} stores its weights or constants as one pickle (an older layout)",
                            hint="re-save it with torch.export.save, or " + HINT_TRUST)
    yield program, _checked_program(_json(reader, program, names, where), where)
    for config_file, folder, kind in (
            (pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(PROGRAM), pt2.WEIGHTS_DIR, "weight"),
            (pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(PROGRAM), pt2.CONSTANTS_DIR, "constant")):
        config = _json(reader, config_file, names, where)
        members = _raw_payloads(config, kind, where, pt2.TENSOR_CONSTANT_FILENAME_PREFIX)
        missing = sorted(m for m in members if folder + m not in names)
        if missing:
            raise SpecError(f"{where} is malformed: it has no {folder}{missing[0]}", hint=HINT_FORMAT)
        yield config_file, json.dumps(config).encode()
        for member in sorted(members):
            yield folder + member, reader.read_bytes(folder + member)
    yield pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(PROGRAM), b""  # torch reads b"" as no inputs
    for extra in extra_files:
        if pt2.EXTRA_DIR + extra in names:
            yield pt2.EXTRA_DIR + extra, reader.read_bytes(pt2.EXTRA_DIR + extra)


def _json(reader, member: str, names: set[str], where: str) -> Any:
    if member not in names:
        raise SpecError(f"{where} is malformed: it has no {member}", hint=HINT_FORMAT)
    try:
        return json.loads(reader.read_bytes(member))
    except (ValueError, RecursionError) as error:
        raise SpecError(f"{where} is malformed: {member} is not JSON ({_short(error)})",
                        hint=HINT_FORMAT) from error


def _raw_payloads(config: Any, kind: str, where: str, tensor_prefix: str) -> set[str]:
    """The members holding raw tensor bytes that ``config`` names; a SpecError
    for any payload torch would unpickle (a tensor subclass, an object)."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise SpecError(f"{where} is malformed: its {kind} config has no 'config' table", hint=HINT_FORMAT)
    members = set()
    for fqn, meta in entries.items():
        member = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(member, str) or not MEMBER.fullmatch(member) or ".." in member:
            raise SpecError(f"{where} is malformed: {kind} {fqn!r} has no valid path_name", hint=HINT_FORMAT)
        if kind == "constant" and not member.startswith(tensor_prefix):
            raise SpecError(f"{where} holds the constant {fqn!r} as a pickled Python object, and "
                            "unpickling it can run arbitrary code", hint=HINT_TRUST)
        if meta.get("use_pickle") is not False:
            raise SpecError(f"{where} stores the {kind} {fqn!r} pickled (a tensor subclass), and "
                            "unpickling it can run arbitrary code", hint=HINT_TRUST)
        members.add(member)
    return members


# ------------------------------------------------------------------ program


def _checked_program(program: Any, where: str) -> bytes:
    """``models/model.json`` without guards, once every symbolic shape is plain
    arithmetic and no input/output spec imports a module."""
    if not isinstance(program, dict):
        raise SpecError(f"{where} is malformed: its program is not a JSON object", hint=HINT_FORMAT)
    for key, value in _items(program):
        if key == "expr_str" and isinstance(value, str):
            problem = expression_problem(value)
            if problem:
                raise SpecError(f"{where} holds the symbolic shape {_clip(value)}, which is not plain "
                                f"arithmetic ({problem}); torch would evaluate it as Python", hint=HINT_TRUST)
        elif key in ("in_spec", "out_spec") and isinstance(value, str):
            module = _spec_import(value)
            if module is not None:
                raise SpecError(f"{where} has an input/output spec that would import the module "
                                f"{_clip(module)}", hint=HINT_TRUST)
    if "guards_code" in program:
        program = {**program, "guards_code": []}
    return json.dumps(program).encode()


def _items(tree: Any) -> Iterator[tuple[str, Any]]:
    """Every ``(key, value)`` of every JSON object in ``tree``, depth first, without recursion."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield from node.items()
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _clip(text: str, size: int = 60) -> str:
    return repr(text if len(text) <= size else text[:size - 3] + "...")


def _spec_import(text: str) -> str | None:
    """The module a serialized pytree spec would make torch import, if any:
    an enum in a context, or a ``defaultdict`` factory outside builtins."""
    try:
        tree = json.loads(text)
    except (ValueError, RecursionError):
        return None  # torch refuses it too, before importing anything
    contexts = [value for key, value in _items(tree) if key == "context"]
    for context in contexts:
        if isinstance(context, str):
            try:
                context = json.loads(context)
            except (ValueError, RecursionError):
                continue
        for key, value in _items(context):
            if key == "__enum__":
                return str(_dict_get(context, "fqn") or "an enum's module")
            if key == "default_factory_module" and value != "builtins":
                return str(value)
    return None


def _dict_get(tree: Any, wanted: str) -> Any:
    return next((value for key, value in _items(tree) if key == wanted), None)


def expression_problem(text: str) -> str | None:
    """Why ``text`` is not a plain symbolic shape, or None when it is one.

    Plain: numbers, size symbols (``s0``, ``u1``), the sympy constants,
    arithmetic and comparisons, and calls of sympy or torch shape classes
    (``Mul``, ``Symbol('s0', positive=True)``, ``FloorDiv``) with constant
    keywords, whose only strings are a Symbol's name or a Float's digits."""
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return "is not an expression"
    nodes = list(ast.walk(tree))
    named = {id(call.args[0]) for call in nodes if isinstance(call, ast.Call) and _names_with_string(call)}
    for node in nodes:
        problem = _node_problem(node, named)
        if problem:
            return problem
    return None


def _names_with_string(call: ast.Call) -> bool:
    """Whether ``call`` is ``Symbol('s0', ...)`` / ``Float('1.5', ...)`` with a valid first string."""
    name = call.func.id if isinstance(call.func, ast.Name) else ""
    first = call.args[0] if call.args else None
    if not isinstance(first, ast.Constant) or not isinstance(first.value, str):
        return False
    if name in ("Symbol", "Dummy"):
        return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", first.value))
    return name == "Float" and bool(NUMBER.fullmatch(first.value))


def _node_problem(node: ast.AST, named: set[int]) -> str | None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or not _shape_class(node.func.id):
            return f"calls {ast.unparse(node.func)[:40]!r}, not a sympy or torch shape class"
        if any(k.arg is None or not isinstance(k.value, ast.Constant) or isinstance(k.value.value, str)
               for k in node.keywords):
            return f"passes {node.func.id} a keyword that is not a number or a boolean"
        return None
    if isinstance(node, ast.Name):
        plain = SYMBOL.fullmatch(node.id) or node.id in CONSTANTS or _shape_class(node.id)
        return None if plain else f"names {node.id!r}"
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str):
            return None if id(node) in named else "holds a string that is not a Symbol's name"
        return None if isinstance(node.value, (int, float)) else f"holds a {type(node.value).__name__}"
    return None if isinstance(node, OPERATORS) else f"uses Python syntax {type(node).__name__}"


def _shape_class(name: str) -> bool:
    """A sympy class (``Mul``, ``Max``, ``StrictLessThan``) or one of torch's
    shape functions (``FloorDiv``, ``CeilToInt``): building one evaluates nothing."""
    import sympy
    from torch.utils._sympy import functions

    if name.startswith("_"):
        return False
    return any(isinstance(obj, type) and issubclass(obj, sympy.Basic)
               for obj in (getattr(functions, name, None), getattr(sympy, name, None)))
