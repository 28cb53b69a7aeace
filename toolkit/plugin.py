"""Everything a micronet plugin imports: ``from micronet.plugin import ...``.

A plugin is a module (or any object) holding functions marked
:data:`hookimpl`, found through the ``micronet`` entry-point group. Each
hook it implements returns records built from the names below; the full
reference, with types, is ``docs/hooks.md`` (made from
:mod:`micronet.hookspecs`), and ``docs/writing-plugins.md`` walks through a
whole plugin.

Hook -> what it returns. Registration hooks: all results are collected; a
name registered twice fails, naming both plugins, unless the later record
says ``replace=True``. Observers: called on every plugin, results ignored.

========================================  ============================================================
``micronet_register_models``              ``list[ModelEntry]``: ``micronet:NAME`` factories
``micronet_register_counters``            ``collect(module)``: ``@counter``, ``@shape_rule``, ``free``
``micronet_register_rulebooks``           ``list[Rulebook]``
``micronet_register_tracks``              ``list[Track]``
``micronet_register_steps``               ``list[CompressionStep]``
``micronet_register_weighted_layers``     ``list[WeightedLayer]``: weights built-in steps may select
``micronet_pipeline_started``             observer of ``(recipe: Recipe, result: Result)``
``micronet_step_started``                 observer of ``(index, step, options, model)``
``micronet_step_finished``                observer of ``(index, step, options, result, error)``
``micronet_pipeline_finished``            observer of ``(history: History)``
``micronet_register_report_sections``     ``list[ReportSection]``
========================================  ============================================================

Units. A counter sees an :class:`OpCall` (shapes and dtypes as
:class:`TensorInfo`, never data; the module for module calls) and returns
:class:`Counts`: single multiplies and additions at full density, batch
included, before any bit width applies. A weighted layer books its weighted
sums as ``dot_products`` sums of ``dot_length`` terms with
``sparse_weight=True``: a dense sum of L terms costs L mults and L - 1 adds,
and the rules shrink L to ``density * L`` where ``density`` is the measured
fraction of nonzeros of the module's ``weight``. Everything else (bias
adds, activations, pooling) goes in ``mults`` / ``adds`` / ``other_ops``
and stays dense. Rulebooks turn records into ``storage`` (parameters in
32-bit equivalents: a b-bit value counts b/32) and ``ops`` (MicroNet
operations in 32-bit equivalents: a b-bit multiply counts b/32).

Targets. A counter's target is a module class, a function, an aten op, a
:class:`Method` (``Method("view")`` for ``x.view(...)``) or a :class:`Lazy`
(``Lazy("timm.layers", "StdConv2d")``): a target named by its module and
attribute, taken only once that module is imported, so a plugin never
imports a heavy model library itself. A Python function with a counter is
kept whole by the fx capture (one node, not traced into) once resolved.

Steps. ``CompressionStep(name, description, run, options)``: ``run(model,
options, context)`` gets a copy of the model as a ``torch.fx.GraphModule``
(change it in place or build another) and returns an ``nn.Module``.
``StepOption(name, types, default, help, choices=(), check=None)``: ``types``
as TOML gives them (``(int,)``, ``(float,)`` which also takes an int,
``(str,)``, ``(list,)`` for an array, whose items ``check`` inspects);
``default=MISSING`` makes the option required; ``choices`` lists the allowed
values; ``check(value)`` returns an error message or None. Every recipe is
checked against the options before any step runs. :class:`StepContext`
carries ``input_shape``, ``result`` (the audit of the model the step
receives), ``data`` (the recipe's ``[data]`` table merged with the step's own
``[step.data]``, or None), ``device``,
``log(message)``, ``original`` (the pipeline's input model, read only),
``trust`` (pass it on to anything that loads files), ``note(key, value)``
(JSON-friendly facts, kept in ``notes`` and the step's entry of
``history.json``), ``registries`` (the run's merged registries) and
``weighted_layers`` (every plugin's :class:`WeightedLayer`). A
:class:`WeightedLayer` tells the built-in ``prune``, ``sparsify``,
``quantize`` and ``factorise`` steps that a plugin's module class holds a
weight they may select.

Bit widths and extra storage: a step calls :func:`set_bits` on a layer
(``weight`` covers every parameter the layer owns, bias included; ``input``
its input activations, so its multiplies; ``accumulator`` its additions)
and :func:`declare_storage` for values it stores beside the parameters (a
clustering codebook, quantization scales), charged ``elements * bits / 32``.
Both live on the module and survive copies, re-tracing and ``model.pt2``.

Masks: a step that prunes calls :func:`set_mask` so fine-tuning keeps the
zeros (:func:`apply_masks` after each optimizer step; :func:`masks` lists
them).

Errors: raise :class:`UsageError` for bad options (exit code 2);
:class:`MicronetError` is the base of every error micronet raises.
"""
from __future__ import annotations

from .audit import Result
from .bits import bits_of, declare_storage, set_bits, storage_of
from .errors import (CompressionError, CounterError, MicronetError, PluginError, SpecError,
                     TraceError, UsageError)
from .manager import hookimpl
from .masks import apply_masks, masks, set_mask
from .pipeline import History, StepRecord
from .recipe import Recipe
from .records import Counts, LayerRecord, TensorInfo
from .registry import Lazy, Method, OpCall, Registration, collect, counter, free, shape_rule
from .reports.sections import ReportSection
from .resolve import ModelEntry
from .rules import LayerCost, Rulebook, Score, ScoreOptions, Scoring, Track
from .steps import MISSING, CompressionStep, StepContext, StepOption, WeightedLayer

__all__ = [
    # the marker every hook implementation carries
    "hookimpl",
    # count: what a counter receives and returns, and how it is declared
    "OpCall", "Method", "Lazy", "TensorInfo", "Counts", "counter", "shape_rule", "free", "collect",
    "Registration",
    # resolve and score
    "ModelEntry", "Rulebook", "Track", "ScoreOptions", "Scoring", "Score", "LayerCost",
    # compress
    "CompressionStep", "StepOption", "StepContext", "MISSING", "WeightedLayer",
    "set_bits", "bits_of", "declare_storage", "storage_of", "set_mask", "apply_masks", "masks",
    # what observers and report sections receive
    "Result", "LayerRecord", "History", "StepRecord", "Recipe", "ReportSection",
    # errors
    "MicronetError", "UsageError", "SpecError", "TraceError", "CounterError", "PluginError",
    "CompressionError",
]
