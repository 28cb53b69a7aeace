"""Built-in step ``sensitivity``: how much each layer alone suffers from bits, zeros and channels.

For every selected layer (by default the ``weight`` of every Conv*/Linear
module and of every declared :class:`~micronet.steps.WeightedLayer`; ``layers``
/ ``ignore`` globs as in the other steps) and every setting alone:

- ``bits = b``: the weight rounded to its per-output-channel symmetric
  ``b``-bit grid (:func:`micronet.plugins.fakequant.fake_quant`, as
  ``quantize`` does; the bias and the activations stay float);
- ``sparsity = s``: the ``round(s * elements)`` smallest magnitudes of the
  weight zeroed, the layer-wise unstructured mask of ``sparsify``
  (zeros already there rank lowest);
- ``act_bits = a``: the layer's *input* activation fake-quantized to ``a``
  bits (2 to 16) by a :class:`~micronet.plugins.fakequant.ActivationQuant`
  (per tensor, affine, ``minmax`` observer: ``quantize``'s default),
  calibrated on the same calibration batches with every other layer
  unchanged; the weight stays float. The quantizer sits in a forward
  pre-hook of the layer's module for the evaluation only;
- ``channels = c``: the layer's ``min(round(c * out), out - 1)`` output
  channels of lowest L2 norm (over the weight's rows ``[out, in*kernel]``;
  ties by position) zeroed, the rest untouched. Zeroed means the channel
  outputs zero, as if removed (:func:`channel_group`): its weight row, its
  ``bias`` entry, and, when the layer's output goes only to a BatchNorm
  (conv -> BN, read from the fx graph), that BatchNorm's ``weight`` and
  ``bias`` entries (else the BN's shift would still feed the next layer);

the model runs the calibration split (the ``[data]`` table's
``calibration_batches``, or ``batches``), and top-1 (percent) and mean
cross-entropy (nats per example) are compared with the unchanged model on the
same batches. Everything else is untouched: the weight is overwritten in
place under ``torch.no_grad`` and copied back from one saved copy (each
tensor a channel setting touches too), and the activation hooks are removed, so the model returned is
bit-identical to the one received (the pipeline says the step changed
nothing). The batches are loaded once and kept on the model's device, in
its dtype.

Cost: one evaluation (a pass over the calibration batches) for the baseline
and one per (layer, setting), plus one calibration pass per activation
width (every layer's quantizer observes in the same pass: observing passes
values through unchanged).

Engines: the (layer, setting) evaluations are a sweep
(:func:`micronet.sweep.run_tasks`, :func:`evaluate_row`): ``engine =
"local"`` runs them one after another in this process, ``engine = "ray"``
as Ray tasks (a local Ray of ``num_cpus`` CPUs started for the step and
stopped after, or the cluster at ``address`` joined), the model, the
batches and the calibrated input quantizers put once in Ray's object store.
Ray tasks ask for no GPU: a model on a GPU is copied to the CPU for them
(the baseline and calibration then run there too). Every evaluation, the
baseline and the calibration run with one torch thread on both engines, so
the table is the same, row for row and bit for bit. ``progress`` of the
step's context draws a bar of the evaluations on the terminal.

Notes left in the history: ``baseline`` ``{top1, loss}``; ``table``, one row
per (layer, setting): ``{layer, kind ("bits" | "sparsity" | "act_bits" |
"channels"), level, top1, loss, drop, loss_increase}`` with ``drop =
baseline top1 - top1`` in percentage points and ``loss_increase = loss -
baseline loss``; ``ranking``, the layer names by their worst drop, most
sensitive first (ties: worst loss increase); ``batches`` / ``examples``
evaluated on; ``evaluations`` (table rows) and ``evaluations_per_second``
(from the baseline to the last row: for Ray, its start included);
``engine``, and for Ray the ``address`` joined (``"local"``: started for the
step) and the ``num_cpus`` of that Ray; ``warnings``. The ``search`` step reuses the table (and measures only the
settings it lacks).
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Collection, Iterable, Iterator, Mapping, Sequence

import torch
from torch import fx, nn

from micronet.errors import UsageError
from micronet.manager import hookimpl
from micronet.plugins.fakequant import ActivationQuant, fake_quant
from micronet.plugins.sparsify import PRUNABLE, _expand, _keep, _tile_scores
from micronet.reports.sensitivity import setting_label
from micronet.selection import Candidate, StepWarnings, kinds_text, select_modules, weighted_candidates
from micronet.steps import CompressionStep, StepContext, StepOption, at_least, check_globs, model_device, \
    model_dtype
from micronet.sweep import (ENGINES, LayerSetting, WeightSweep, check_sweep_options, describe_setting,
                            evaluate_setting, run_tasks, top1_and_loss, torch_threads)
from micronet.training import data as training_data
from micronet.training.data import eval_mode

__all__ = ["SENSITIVITY", "sensitivity", "measure", "perturbed", "rank", "channel_keep", "channel_group",
           "zero_channels", "input_quantized", "LayerSweep", "evaluate_row", "evaluate_input", "evaluate_channels",
           "SWEEP_OPTIONS", "sweep_options", "check_sweep", "sweep_notes",
           "calibrated_quantizers", "select_targets", "load_batches", "check_bit_levels",
           "check_sparsity_levels", "check_act_levels", "KINDS"]

Batch = tuple[torch.Tensor, torch.Tensor]
#: The kinds of setting a table row can hold.
KINDS = ("bits", "sparsity", "act_bits", "channels")


# ------------------------------------------------------------- options


def check_bit_levels(value: list) -> str | None:
    if not all(isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= 16 for b in value):
        return f"expected a list of integers from 1 to 16 such as [8, 4, 2], got {value!r}"
    return None


def check_sparsity_levels(value: list) -> str | None:
    ok = all(isinstance(s, (int, float)) and not isinstance(s, bool) and 0 <= s < 1 for s in value)
    return None if ok else f"expected a list of numbers in [0, 1) such as [0.5, 0.9], got {value!r}"


def check_act_levels(value: list) -> str | None:
    """Activation bits to measure: whole numbers from 2 to 16 (``ActivationQuant``'s range)."""
    if not all(isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 16 for b in value):
        return f"expected a list of integers from 2 to 16 such as [16, 8, 4], got {value!r}"
    return None


def _check_batches(value: int) -> str | None:
    return None if value >= 1 else f"expected an integer >= 1, got {value!r}"


def _validate(options: Mapping[str, Any]) -> None:
    if not any(options[kind] for kind in KINDS):
        raise UsageError("bits, sparsity, act_bits and channels are all empty: nothing to measure",
                         hint="bits = [8, 4, 2], sparsity = [0.5, 0.9], act_bits = [8, 4] or channels = [0.25, 0.5]")
    check_sweep(options)


#: The options of a step whose evaluations are a sweep (``sensitivity``, ``search``).
SWEEP_OPTIONS = (
    StepOption("engine", (str,), "local", "where the evaluations run: local (in this process, one after "
               "another) or ray (Ray tasks, on CPUs only: a model on a GPU is copied to the CPU for them; "
               "pip install 'micronet-toolkit[distributed]'); the same table either way", choices=ENGINES),
    StepOption("address", (str,), "", "engine = \"ray\": the cluster to join (\"auto\", \"ray://HOST:PORT\" "
               "or \"HOST:PORT\"); \"\": start a local Ray for the sweep and stop it after"),
    StepOption("num_cpus", (int,), 0, "engine = \"ray\" without an address: the CPUs of the local Ray "
               "(0: Ray's default, all of this machine's)", check=at_least(0)),
)


def sweep_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The :func:`micronet.sweep.run_tasks` keywords of a step's :data:`SWEEP_OPTIONS`
    (``address`` ``""`` and ``num_cpus`` 0 are Ray's defaults: None)."""
    return {"engine": options["engine"], "address": options["address"] or None,
            "num_cpus": options["num_cpus"] or None}


def check_sweep(options: Mapping[str, Any]) -> None:
    """Refuse, in one line, :data:`SWEEP_OPTIONS` that do not go together
    (:func:`micronet.sweep.check_sweep_options`: an address or num_cpus with
    the local engine, num_cpus with an address, a malformed address, Ray not
    installed)."""
    check_sweep_options(**sweep_options(options))


def sweep_notes(options: Mapping[str, Any], context: StepContext) -> Callable[[Mapping[str, Any]], None]:
    """Note ``engine`` now, and return the ``on_start`` for
    :func:`micronet.sweep.run_tasks` that notes, for Ray, the ``address``
    joined (``"local"``: started for the sweep) and the ``num_cpus`` it had."""
    context.note("engine", options["engine"])

    def on_start(where: Mapping[str, Any]) -> None:
        if where["engine"] == "ray":
            context.note("address", where["address"])
            context.note("num_cpus", where["num_cpus"])

    return on_start


# --------------------------------------------------------- measurement


def channel_keep(weight: torch.Tensor, level: float) -> torch.Tensor:
    """Bool ``[out]``: False at the ``min(round(level * out), out - 1)`` output
    channels (rows of ``weight`` as ``[out, in*kernel]``) of lowest L2 norm,
    ties broken by position (the later rows are kept)."""
    rows = weight.shape[0] if weight.dim() else 1
    norms = weight.detach().float().reshape(rows, -1).norm(dim=1)
    return _keep(norms, min(round(level * rows), rows - 1))


def perturbed(weight: torch.Tensor, kind: str, level: float) -> torch.Tensor:
    """``weight`` fake-quantized to ``level`` bits (``kind == "bits"``), with its
    ``round(level * numel)`` smallest magnitudes zeroed (``"sparsity"``), or
    with its lowest-L2-norm output channels zeroed (``"channels"``,
    :func:`channel_keep`). ``"act_bits"`` perturbs the input, not the weight:
    a ValueError."""
    if kind == "bits":
        return fake_quant(weight, int(level))
    if kind == "channels":
        keep = channel_keep(weight, level).to(weight.dtype)
        return weight * keep.reshape(-1, *([1] * (weight.dim() - 1)))
    if kind != "sparsity":
        raise ValueError(f"{kind!r} is not a perturbation of the weight")
    scores = _tile_scores(weight, (1, 1))  # [out, in*kernel], |w|
    keep = _keep(scores, round(level * scores.numel()))
    return weight * _expand(keep, (1, 1), weight)


def channel_group(model: nn.Module, name: str, target: Candidate) -> tuple[tuple[nn.Module, str], ...]:
    """The ``(module, parameter name)`` pairs whose entry ``i`` (dim 0) make
    output channel ``i`` of layer ``name``: its weight, its ``bias``, and
    the ``weight`` / ``bias`` of the BatchNorm (of as many features) that is
    the only reader of the layer's output, when ``model``'s fx graph says so."""
    out = target.tensor.shape[0]
    group = [(target.module, target.weight)]
    bias = target.module._parameters.get("bias")
    if target.weight != "bias" and bias is not None and bias.dim() == 1 and bias.shape[0] == out:
        group.append((target.module, "bias"))
    norm = _only_batchnorm_after(model, name, out)
    if norm is not None:
        group += [(norm, p) for p in ("weight", "bias") if norm._parameters.get(p) is not None]
    return tuple(group)


def _only_batchnorm_after(model: nn.Module, name: str, out: int) -> nn.Module | None:
    if not isinstance(model, fx.GraphModule):
        return None
    calls = [n for n in model.graph.nodes if n.op == "call_module" and n.target == name]
    if len(calls) != 1 or len(calls[0].users) != 1:
        return None
    user = next(iter(calls[0].users))
    module = model.get_submodule(user.target) if user.op == "call_module" else None
    ok = isinstance(module, nn.modules.batchnorm._BatchNorm) and module.num_features == out \
        and user.args[:1] == (calls[0],)
    return module if ok else None


def zero_channels(group: Sequence[tuple[nn.Module, str]], keep: torch.Tensor) -> None:
    """Zero, in place, entry ``i`` (dim 0) of every parameter of ``group`` where ``keep[i]`` is False."""
    with torch.no_grad():
        for module, name in group:
            param = module._parameters[name]
            param.mul_(keep.to(param.device, param.dtype).reshape(-1, *([1] * (param.dim() - 1))))


@contextlib.contextmanager
def input_quantized(module: nn.Module, quantizer: nn.Module) -> Iterator[None]:
    """While inside, ``module``'s first positional input goes through
    ``quantizer`` (a forward pre-hook, removed on leaving)."""
    def hook(_module, args):
        return (quantizer(args[0]), *args[1:]) if args else None

    handle = module.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def calibrated_quantizers(model: nn.Module, modules: Mapping[str, nn.Module], bits: int,
                          loaded: Sequence[Batch]) -> dict[str, ActivationQuant]:
    """One ``bits``-bit :class:`ActivationQuant` per module of ``modules``,
    each calibrated (``minmax``) on that module's input over ``loaded`` in
    one pass of the unchanged model (observing passes values through)."""
    device = model_device(model)
    quantizers = {name: ActivationQuant(bits).to(device) for name in modules}
    if not quantizers:
        return quantizers
    with contextlib.ExitStack() as stack:
        for name, module in modules.items():
            quantizers[name].start_calibration()
            stack.enter_context(input_quantized(module, quantizers[name]))
        for x, _ in loaded:
            model(x)
    for name, quantizer in quantizers.items():
        try:
            quantizer.freeze()
        except RuntimeError as error:
            raise UsageError(f"sensitivity: {name}'s input could not be calibrated ({error})",
                             hint=f"leave it out of act_bits with ignore = [{name!r}]") from None
    return quantizers


@dataclass(frozen=True)
class LayerSweep:
    """What every evaluation of a sensitivity sweep reads (put once in Ray's
    object store for ``engine = "ray"``): the ``model``, the calibration
    ``batches`` on its device and in its dtype, each activation quantizer
    calibrated for it by ``(layer, bits)`` (``act_bits`` settings), and the
    ``(module name, parameter name)`` pairs that make each layer's output
    channels (``channels`` settings, :func:`channel_group`)."""
    model: nn.Module
    batches: tuple[Batch, ...]
    quantizers: Mapping[tuple[str, int], ActivationQuant]
    groups: Mapping[str, tuple[tuple[str, str], ...]]


def evaluate_input(shared: LayerSweep, setting: LayerSetting) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy in nats per example) of
    ``shared.model`` (eval mode, no gradients) over ``shared.batches`` with
    ``setting.layer``'s input through its ``setting.level``-bit quantizer
    (a hook, removed after)."""
    module = shared.model.get_submodule(setting.layer)
    with eval_mode(shared.model), torch.no_grad(), \
            input_quantized(module, shared.quantizers[(setting.layer, int(setting.level))]):
        return top1_and_loss(shared.model, shared.batches)


def evaluate_channels(shared: LayerSweep, setting: LayerSetting) -> tuple[float, float]:
    """(top-1 in percent, mean cross-entropy in nats per example) of
    ``shared.model`` (eval mode, no gradients) over ``shared.batches`` with
    the fraction ``setting.level`` of ``setting.layer``'s output channels
    zeroed (:func:`channel_keep` on its weight, :func:`zero_channels` on its
    group); every tensor of the group is restored bit for bit after."""
    model = shared.model
    group = [(model.get_submodule(module), param) for module, param in shared.groups[setting.layer]]
    saved = [(m._parameters[p], m._parameters[p].detach().clone()) for m, p in group]
    with eval_mode(model), torch.no_grad():
        try:
            zero_channels(group, channel_keep(saved[0][1], setting.level))
            return top1_and_loss(model, shared.batches)
        finally:
            _restore(saved)


def evaluate_row(shared: LayerSweep, setting: LayerSetting) -> tuple[float, float]:
    """One evaluation of a sensitivity sweep, by the setting's kind:
    :func:`evaluate_input` (``act_bits``), :func:`evaluate_channels`
    (``channels``), else the weight perturbed by :func:`perturbed`
    (:func:`micronet.sweep.evaluate_setting`: ``bits``, ``sparsity``)."""
    if setting.kind == "act_bits":
        return evaluate_input(shared, setting)
    if setting.kind == "channels":
        return evaluate_channels(shared, setting)
    return evaluate_setting(WeightSweep(shared.model, shared.batches, perturbed), setting)


def measure(model: nn.Module, targets: Mapping[str, Candidate], settings: Iterable[tuple[str, float]],
            loaded: Sequence[Batch], log=lambda line: None,
            skip: Collection[tuple[str, str, float]] = (), *, engine: str = "local", address: str | None = None,
            num_cpus: int | None = None, progress: bool = False, on_start=None) -> dict[str, Any]:
    """The baseline and one row per (layer, setting), except the ``(layer,
    kind, level)`` in ``skip``; see the module docstring. Every evaluation
    goes through :func:`micronet.sweep.run_tasks` (:func:`evaluate_row`) on
    ``engine`` (``address`` / ``num_cpus`` for Ray; ``progress``: a bar on
    the terminal; ``on_start``: told where the sweep runs), with one torch
    thread, as are the baseline and the input quantizers' calibration (so
    the table is the same on both engines, and a setting that changes
    nothing drops 0). For Ray, a model or batches off the CPU are copied to
    it (Ray tasks ask for no GPU). ``model`` is left bit for bit as it came."""
    settings = list(settings)
    wanted = {name: [(k, v) for k, v in settings if (name, k, float(v)) not in skip] for name in targets}
    if engine == "ray":
        model, loaded = _on_cpu(model, loaded)
        targets = {name: replace(c, module=model.get_submodule(name)) for name, c in targets.items()}
    started = time.perf_counter()
    with eval_mode(model), torch.no_grad(), torch_threads(1):
        top, loss = top1_and_loss(model, loaded)
        quantizers = {}
        for bits in dict.fromkeys(int(v) for k, v in settings if k == "act_bits"):
            modules = {n: targets[n].module for n in targets if ("act_bits", bits) in wanted[n]}
            quantizers.update({(n, bits): q for n, q in calibrated_quantizers(model, modules, bits, loaded).items()})
    names = {module: name for name, module in model.named_modules()}
    groups = {name: tuple((names[m], p) for m, p in channel_group(model, name, target))
              for name, target in targets.items() if any(k == "channels" for k, _ in wanted[name])}
    keys = [(name, kind, level) for name in targets for kind, level in wanted[name]]
    tasks = [LayerSetting(name, kind, level, targets[name].weight) for name, kind, level in keys]
    found = run_tasks(evaluate_row, LayerSweep(model, tuple(loaded), quantizers, groups), tasks,
                      engine=engine, address=address, num_cpus=num_cpus, describe=describe_setting,
                      label="sensitivity", progress=progress, on_start=on_start)
    seconds = time.perf_counter() - started
    rows = [{"layer": name, "kind": kind, "level": level, "top1": round(t, 4), "loss": round(l, 6),
             "drop": round(top - t, 4), "loss_increase": round(l - loss, 6)}
            for (name, kind, level), (t, l) in zip(keys, found)]
    for name in targets:
        layer_rows = [row for row in rows if row["layer"] == name]
        if layer_rows:
            log(_layer_line(name, layer_rows))
    return {"baseline": {"top1": round(top, 4), "loss": round(loss, 6)}, "table": rows,
            "ranking": rank(rows), "evaluations": len(rows),
            "evaluations_per_second": round(len(rows) / seconds, 2) if seconds > 0 and rows else None}


def _on_cpu(model: nn.Module, loaded: Sequence[Batch]) -> tuple[nn.Module, list[Batch]]:
    """``model`` and ``loaded`` as they are when on the CPU, else copies there."""
    cpu = torch.device("cpu")
    if model_device(model) != cpu:
        model = copy.deepcopy(model).to(cpu)
    return model, [(x.to(cpu), y.to(cpu)) for x, y in loaded]


def _restore(saved: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for tensor, original in saved:
        tensor.copy_(original)


def rank(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """Layer names by their worst drop, then worst loss increase, most sensitive first."""
    worst: dict[str, tuple[float, float]] = {}
    for row in rows:
        drop, increase = worst.get(row["layer"], (float("-inf"), float("-inf")))
        worst[row["layer"]] = (max(drop, row["drop"]), max(increase, row["loss_increase"]))
    return sorted(worst, key=lambda name: worst[name], reverse=True)


def _layer_line(name: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """``sensitivity: conv1: top-1 drop 8b 0.00, 4b 0.56, 2b 12.22, 50% 0.00, a4 1.10, ch 25% 3.00 points``
    (the labels of the pipeline page and terminal table, :func:`micronet.reports.sensitivity.setting_label`)."""
    parts = [setting_label(row["kind"], row["level"]) for row in rows]
    drops = ", ".join(f"{part} {row['drop']:.2f}" for part, row in zip(parts, rows))
    return f"sensitivity: {name}: top-1 drop {drops} points"


# ---------------------------------------------------------------- step


def select_targets(model: nn.Module, options: Mapping[str, Any], warner: StepWarnings,
                   context: StepContext) -> dict[str, Candidate]:
    """The weighted layers the ``layers`` / ``ignore`` globs pick (Conv*/Linear and
    declared ones), each glob that matches nothing warned."""
    declared = context.weighted_layers
    candidates = weighted_candidates(model.named_modules(), declared, PRUNABLE)
    chosen = select_modules(candidates, options["layers"], options["ignore"], 0,
                            lambda c: c.tensor.numel(), kinds_text("Conv/Linear", declared) + " layer")
    for message in chosen.unmatched:
        warner.warn(message)
    return chosen.modules


def load_batches(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> list[Batch]:
    """The calibration batches, once, on the model's device and in its dtype."""
    if context.data is None:
        raise UsageError("sensitivity needs a [data] table", hint='[data] dataset = "digits"')
    device, dtype = model_device(model), model_dtype(model)
    classes = training_data.output_classes(model, context.input_shape)
    found = training_data.batches(context.data, context.input_shape, options["batches"], num_classes=classes,
                                  split="calibration")
    if not found:
        raise UsageError("sensitivity has no calibration batches to evaluate on",
                         hint="set calibration_batches in [data] (or batches) to 1 or more")
    return [(x.to(device, dtype), y.to(device)) for x, y in found]


def sensitivity(model: nn.Module, options: Mapping[str, Any], context: StepContext) -> nn.Module:
    """Measure each selected layer's sensitivity (see the module docstring) and
    return ``model`` unchanged."""
    loaded = load_batches(model, options, context)
    warner = StepWarnings("sensitivity")
    targets = select_targets(model, options, warner, context)
    settings = [("bits", int(b)) for b in options["bits"]] + [("sparsity", float(s)) for s in options["sparsity"]]
    settings += [("act_bits", int(b)) for b in options["act_bits"]]
    settings += [("channels", float(c)) for c in options["channels"]]
    found = measure(model, targets, settings, loaded, context.log, **sweep_options(options),
                    progress=context.progress, on_start=sweep_notes(options, context))
    context.note("batches", len(loaded))
    context.note("examples", sum(len(y) for _, y in loaded))
    for key, value in found.items():
        context.note(key, value)
    warner.note(context)
    return model


SENSITIVITY = CompressionStep(
    name="sensitivity",
    description="per-layer top-1 drop and loss increase on the calibration split at each weight bits, "
                "sparsity, input bits and channel-pruning setting; the model is not changed",
    run=sensitivity,
    needs_data=True,
    options=(
        StepOption("layers", (list,), [], "module name globs to measure (default: every Conv*/Linear "
                   "and declared weighted layer)", check=check_globs),
        StepOption("ignore", (list,), [], "module name globs to leave out", check=check_globs),
        StepOption("bits", (list,), [8, 4, 2], "weight bits to try, each alone (1 to 16)", check=check_bit_levels),
        StepOption("sparsity", (list,), [0.5, 0.75, 0.9], "unstructured magnitude sparsities to try, "
                   "each alone, 0 <= s < 1", check=check_sparsity_levels),
        StepOption("act_bits", (list,), [], "bits of the layer's input activations to try, each alone "
                   "(2 to 16)", check=check_act_levels),
        StepOption("channels", (list,), [], "fractions of output channels (lowest L2 norm) to zero, each "
                   "alone, 0 <= c < 1", check=check_sparsity_levels),
        StepOption("batches", (int,), None, "calibration batches to evaluate on (default: the [data] "
                   "table's calibration_batches)", check=_check_batches),
        *SWEEP_OPTIONS,
    ),
    validate=_validate,
)


@hookimpl
def micronet_register_steps():
    return [SENSITIVITY]
