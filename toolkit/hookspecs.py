"""The one contract between micronet and its plugins.

Every hook is prefixed ``micronet_``. Registration hooks return a list of
records (all results are collected, in plugin order: later registrations of
the same name fail unless they say ``replace=True``); they must not do work
beyond building those records. Implementations may accept a subset of the
arguments, so specs can grow without breaking plugins.

Plugins are found through the ``micronet`` entry-point group; built-ins
register through these very hooks (see ``micronet.manager.DEFAULT_PLUGINS``).
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("micronet")

# --------------------------------------------------------------------- count


@hookspec
def micronet_register_counters():
    """Declare counters, shape rules and free ops.

    Called once per plugin manager, when the run's
    :class:`~micronet.registry.CounterRegistry` is built.

    :return: a list of :class:`~micronet.registry.Registration` (usually
        ``micronet.registry.collect(sys.modules[__name__])``). A counter maps
        an :class:`~micronet.registry.OpCall` to
        :class:`~micronet.records.Counts` (mults, adds and other ops at full
        density, before precision); a shape rule maps it to the output's
        :class:`~micronet.records.TensorInfo`. A module class with a counter
        is traced as a leaf, and so are its subclasses that keep its
        ``forward``; a subclass that writes its own ``forward`` is traced
        through unless it is registered itself.
    """


# --------------------------------------------------------------------- score


@hookspec
def micronet_register_rulebooks():
    """Declare rulebooks: how records turn into MicroNet ops and storage.

    :return: a list of :class:`~micronet.rules.Rulebook`; names must be unique.
    """


@hookspec
def micronet_register_tracks():
    """Declare tracks: reference constants (params, ops) and the quality bar.

    :return: a list of :class:`~micronet.rules.Track`; names must be unique.
    """


# ------------------------------------------------------------------- resolve


@hookspec
def micronet_register_models():
    """Declare built-in model factories, resolved by ``micronet:NAME`` specs.

    :return: a list of :class:`~micronet.resolve.ModelEntry`; names must be unique.
    """


# ------------------------------------------------------------------ compress


@hookspec
def micronet_register_steps():
    """Declare compression steps usable in a recipe as ``use = "NAME"``.

    :return: a list of :class:`~micronet.steps.CompressionStep`: a name, the
        options it accepts (names, types, defaults), and
        ``run(model, options, context) -> nn.Module`` which receives a copy of
        the model as a ``torch.fx.GraphModule`` and returns the new model.
        Names must be unique.
    """


@hookspec
def micronet_pipeline_started(recipe, result):
    """Observer: a pipeline is about to run its first step.

    :param recipe: the validated :class:`~micronet.recipe.Recipe`.
    :param result: the :class:`~micronet.audit.Result` of the input model.
    :return: ignored. Called on every plugin.
    """


@hookspec
def micronet_step_started(index, step, options, model):
    """Observer: step ``index`` (1-based) is about to run.

    :param step: the :class:`~micronet.steps.CompressionStep`.
    :param options: its options after defaults were filled in.
    :param model: the copy the step will receive (do not modify it here).
    :return: ignored. Called on every plugin.
    """


@hookspec
def micronet_step_finished(index, step, options, result, error):
    """Observer: step ``index`` ended, with its re-scored ``result`` or the
    ``error`` it raised (the other is ``None``).

    :return: ignored. Called on every plugin.
    """


@hookspec
def micronet_pipeline_finished(history):
    """Observer: the pipeline ended (completely or at a failing step).

    :param history: the :class:`~micronet.pipeline.History` so far.
    :return: ignored. Called on every plugin.
    """


# -------------------------------------------------------------------- report


@hookspec
def micronet_register_report_sections():
    """Declare extra sections for reports.

    :return: a list of :class:`~micronet.reports.sections.ReportSection`: a
        name, a title, and ``render(result) -> list[tuple[str, str]]`` giving
        (label, value) lines that the terminal table and the JSON document
        append (the HTML page shows them too). Names must be unique.
    """
