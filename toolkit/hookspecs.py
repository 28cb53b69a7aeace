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
        is traced as a leaf.
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
