"""The one contract between micronet and its plugins: every hook, in flow order.

A run goes resolve -> capture -> count -> score -> compress -> report, and
the hooks below are grouped the same way. Every hook is prefixed
``micronet_``; a plugin implements the ones it needs with
:data:`micronet.plugin.hookimpl` and may accept a subset of a hook's
arguments (specs can grow without breaking plugins).

Two kinds of hook:

- ``micronet_register_*`` hooks take no argument and return a list of
  records. All results are collected, in plugin registration order; a name
  registered twice fails at start-up, naming both plugins, unless the later
  record says ``replace=True``. They are called when the plugin manager is
  built (a plugin whose hook raises is left out and named) and again when a
  run's registries are built, so they must do nothing beyond building
  those records.
- Observer hooks (``micronet_pipeline_*``, ``micronet_step_*``) are called on
  every plugin for their side effects (logging, reports); what they return is
  ignored.

No hook is ``firstresult``: no single plugin's answer decides for the others.
Plugins are found through the ``micronet`` entry-point group; the built-ins
register through these very hooks (``micronet.manager.DEFAULT_PLUGINS``).
``docs/hooks.md`` is generated from this module (``python docs/gen_hooks.py``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import pluggy

if TYPE_CHECKING:
    from torch import nn

    from .audit import Result
    from .pipeline import History
    from .recipe import Recipe
    from .registry import Registration
    from .reports.sections import ReportSection
    from .resolve import ModelEntry
    from .rules import Rulebook, Track
    from .steps import CompressionStep, WeightedLayer

hookspec = pluggy.HookspecMarker("micronet")

# ------------------------------------------------------------------- resolve


@hookspec
def micronet_register_models() -> list[ModelEntry]:
    """Declare model factories, resolved by ``micronet:NAME`` specs.

    All results are collected; names must be unique (``replace=True``
    overrides an earlier entry).

    :return: a list of :class:`~micronet.resolve.ModelEntry`: a name, a
        factory taking keyword arguments (``micronet:NAME?width=2`` passes
        ``width=2``) and returning an ``nn.Module``, and the model's default
        input shape (batch 1) when it has one.
    """


# ------------------------------------------------------------------- capture
# No hook of its own: a module class with a counter (micronet_register_counters)
# is kept as one node by torch.fx, so counters also decide how a model is captured.

# --------------------------------------------------------------------- count


@hookspec
def micronet_register_counters() -> list[Registration]:
    """Declare counters, shape rules and free ops.

    All results are collected; a target registered twice fails, naming both
    plugins, unless the later registration says ``replace=True``.

    :return: a list of :class:`~micronet.registry.Registration`, usually
        ``micronet.plugin.collect(sys.modules[__name__])`` over functions
        decorated with ``@counter`` / ``@shape_rule`` and values made by
        ``free(...)``. A counter maps an :class:`~micronet.registry.OpCall`
        to :class:`~micronet.records.Counts` (single mults, adds and other
        ops at full density and 32 bits, batch included; a weighted layer
        books its dot products as ``dot_products`` x ``dot_length`` with
        ``sparse_weight=True`` so that its weight's sparsity shrinks them);
        a shape rule maps it to the output's
        :class:`~micronet.records.TensorInfo`. A module class with a counter
        is traced as a leaf, and so are its subclasses that keep its
        ``forward``; a subclass that writes its own ``forward`` is traced
        through unless it is registered itself.
    """


# --------------------------------------------------------------------- score


@hookspec
def micronet_register_rulebooks() -> list[Rulebook]:
    """Declare rulebooks: how layer records turn into MicroNet ops and storage.

    All results are collected; names must be unique (``replace=True``
    overrides an earlier rulebook).

    :return: a list of :class:`~micronet.rules.Rulebook`; its ``evaluate``
        gives storage in 32-bit parameter equivalents and ops in 32-bit
        MicroNet operations.
    """


@hookspec
def micronet_register_tracks() -> list[Track]:
    """Declare tracks: a reference model's constants and the quality bar.

    All results are collected; names must be unique (``replace=True``
    overrides an earlier track).

    :return: a list of :class:`~micronet.rules.Track`: reference parameters
        and MicroNet ops (the score's denominators), the top-1 accuracy bar
        in percent, the default input shape.
    """


# ------------------------------------------------------------------ compress


@hookspec
def micronet_register_steps() -> list[CompressionStep]:
    """Declare compression steps usable in a recipe as ``use = "NAME"``.

    All results are collected; names must be unique (``replace=True``
    overrides an earlier step).

    :return: a list of :class:`~micronet.steps.CompressionStep`: a name, the
        options it accepts (:class:`~micronet.steps.StepOption`: types,
        default or required, choices, check), and
        ``run(model, options, context) -> nn.Module``, which receives a copy
        of the model as a ``torch.fx.GraphModule`` and returns the new model.
    """


@hookspec
def micronet_register_weighted_layers() -> list[WeightedLayer]:
    """Declare module classes whose weight the built-in steps may select.

    The built-in steps that select layers (``prune``, ``sparsify``,
    ``quantize``, ``factorise``) know ``nn.Conv*`` and ``nn.Linear``; a
    plugin that brings its own weighted module declares it here and they
    select it too: ``sparsify`` zeroes and masks its weight, ``quantize``
    puts it on a grid, ``prune`` keeps it whole (with the channels entering
    and leaving it), ``factorise`` leaves it alone and says why. All results
    are collected; a class declared twice fails, naming both plugins,
    unless the later declaration says ``replace=True``.

    :return: a list of :class:`~micronet.steps.WeightedLayer`: the module
        class (its subclasses match too) and the name of the parameter that
        is its weight (``"weight"`` by default), read as
        ``[out, in * kernel]``.
    """


@hookspec
def micronet_pipeline_started(recipe: Recipe, result: Result) -> None:
    """Observer: a pipeline is about to run its first step.

    Called on every plugin; what they return is ignored.

    :param recipe: the validated :class:`~micronet.recipe.Recipe` (every
        step known, every option checked).
    :param result: the :class:`~micronet.audit.Result` of the input model.
    """


@hookspec
def micronet_step_started(index: int, step: CompressionStep, options: Mapping[str, Any],
                          model: nn.Module) -> None:
    """Observer: a step is about to run.

    Called on every plugin; what they return is ignored.

    :param index: the step's place in the recipe, from 1.
    :param step: the :class:`~micronet.steps.CompressionStep`.
    :param options: its options, defaults filled in.
    :param model: the copy the step will receive (do not modify it here).
    """


@hookspec
def micronet_step_finished(index: int, step: CompressionStep, options: Mapping[str, Any],
                           result: Result | None, error: BaseException | None) -> None:
    """Observer: a step ended, with its re-scored result or the error it raised.

    Called on every plugin; what they return is ignored.

    :param index: the step's place in the recipe, from 1.
    :param step: the :class:`~micronet.steps.CompressionStep`.
    :param options: its options, defaults filled in.
    :param result: the :class:`~micronet.audit.Result` of the model it
        returned, re-captured and re-scored; ``None`` when it failed.
    :param error: the exception it raised; ``None`` when it succeeded.
    """


@hookspec
def micronet_pipeline_finished(history: History) -> None:
    """Observer: the pipeline ended, completely or at a failing step.

    Called on every plugin; what they return is ignored. It runs before a
    failing step's error is raised.

    :param history: the :class:`~micronet.pipeline.History` so far: the
        input's result, then one record per step that ran.
    """


# -------------------------------------------------------------------- report


@hookspec
def micronet_register_report_sections() -> list[ReportSection]:
    """Declare extra sections for reports.

    All results are collected; names must be unique (``replace=True``
    overrides an earlier section).

    :return: a list of :class:`~micronet.reports.sections.ReportSection`: a
        name, a title, and ``render(result) -> list[tuple[str, str]]`` giving
        (label, value) lines about a :class:`~micronet.audit.Result` (an
        empty list leaves the section out). The terminal table, ``--json``
        (``"sections": {title: [[label, value], ...]}``), ``history.json``
        and the HTML pages show them.
    """
