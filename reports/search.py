"""The pipeline page's "Search" section, and its terminal lines, from a
``search`` step (see :mod:`micronet.plugins.search`).

The step notes ``settings`` ``{layer: {weight_bits, sparsity[, act_bits,
channels, predicted_drop]}}``, ``predicted_score``, ``score`` (its re-audit),
``predicted_drop`` (top-1 points, the additive model on the calibration split),
and, when it has them, ``objective`` (``"target_score"`` or
``"max_accuracy_drop"``), ``accuracy_before`` / ``accuracy`` /
``measured_drop`` (test split), ``attempts``, ``sparsity_reached``,
``lambda``, ``nearest_score`` or ``least_drop``, ``rescores``, ``seconds``;
its options hold the budget (``target_score`` or ``max_accuracy_drop``).
:func:`search_view` gathers them with what the pipeline measured around the
step (the layer's parameters before it, its part of the score after it, top-1
on the test split before and after when the notes do not say) into one
:class:`SearchView` that both renderers read. Activation bits and channels
appear only when some layer has a value that changes something (activation
bits other than 32, channels other than 0). Layer names come from the model:
escaped in HTML, :func:`~micronet.text.printable` in the terminal.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from micronet.text import printable

from .svg import esc

__all__ = ["SearchView", "LayerChoice", "search_view", "search_section", "search_text"]

#: Option names a search may use for a budget on the top-1 drop (points).
DROP_BUDGETS = ("max_drop", "max_accuracy_drop", "max_top1_drop")
_SETTING_KEYS = ("weight_bits", "sparsity", "act_bits", "channels")
#: The value of a setting that changes nothing: its column is left out when every layer has it.
NEUTRAL = {"act_bits": 32.0, "channels": 0.0}
#: How the search's objectives read.
OBJECTIVES = {"target_score": "the least predicted top-1 drop within a score budget",
              "max_accuracy_drop": "the lowest score within a top-1 drop budget"}


def _float(value: Any) -> float | None:
    """``value`` as a finite float, or None (text, None, NaN, booleans)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class LayerChoice:
    """One layer's chosen setting: ``params`` (elements, before the step),
    ``weight_bits`` / ``act_bits`` (bits), ``sparsity`` chosen and ``reached``
    (fractions of zeros), ``channels`` (as noted: a fraction or a count),
    ``predicted_drop`` (top-1 points) and ``cost`` (its part of the score
    after the step, score units); None where unknown."""

    name: str
    params: int | None
    weight_bits: float | None
    sparsity: float | None
    reached: float | None
    act_bits: float | None
    channels: float | None
    predicted_drop: float | None
    cost: float | None


@dataclass(frozen=True)
class SearchView:
    """What a search step chose and reached. Scores in score units, drops in
    top-1 percentage points, accuracies in percent, ``seconds`` in seconds."""

    objective: str | None
    target_score: float | None
    max_drop: float | None
    predicted_score: float | None
    score: float | None
    predicted_drop: float | None
    measured_drop: float | None
    top1_before: float | None
    top1_after: float | None
    nearest_score: float | None
    least_drop: float | None
    attempts: tuple[Mapping[str, Any], ...]
    lam: float | None
    rescores: float | None
    seconds: float | None
    sensitivity_from: str | None
    layers: tuple[LayerChoice, ...]

    @property
    def meets_budget(self) -> bool | None:
        """Whether the achieved score (and measured drop, for a drop budget) is within the budget."""
        checks = []
        if self.target_score is not None and self.score is not None:
            checks.append(self.score <= self.target_score)
        if self.max_drop is not None and self.measured_drop is not None:
            checks.append(self.measured_drop <= self.max_drop)
        return all(checks) if checks else None

    def has(self, field: str) -> bool:
        """Whether any layer has a value for ``field`` that changes something (a column to show)."""
        return any(getattr(layer, field) not in (None, NEUTRAL.get(field)) for layer in self.layers)


def _objective(notes: Mapping[str, Any]) -> str | None:
    value = notes.get("objective")
    if value is None:
        return None
    if isinstance(value, Mapping):
        return ", ".join(f"{key} = {item}" for key, item in value.items())
    return OBJECTIVES.get(str(value), str(value))


def _measured(notes: Mapping[str, Any], before, after) -> tuple[float | None, float | None, float | None]:
    """(top-1 before, top-1 after, drop) on the test split: the step's notes, else the pipeline's results."""
    top1_before = _float(notes.get("accuracy_before"))
    top1_after = _float(notes.get("accuracy"))
    if top1_before is None:
        top1_before = _float(getattr(before, "accuracy", None))
    if top1_after is None and after is not None:
        top1_after = _float(after.accuracy)
    drop = _float(notes.get("measured_drop"))
    if drop is None and top1_before is not None and top1_after is not None:
        drop = top1_before - top1_after
    return top1_before, top1_after, drop


def _layer_parts(result, names: Sequence[str]) -> tuple[dict[str, int], dict[str, float]]:
    """(params of each layer's first record, its part of the score summed over its records)."""
    params: dict[str, int] = {}
    cost: dict[str, float] = {}
    if result is None:
        return params, cost
    wanted = set(names)
    for row in result.rows():
        if row["name"] in wanted:
            params.setdefault(row["name"], int(row["params"]))
            cost[row["name"]] = cost.get(row["name"], 0.0) + row["share"] * result.score.total
    return params, cost


def _choices(notes: Mapping[str, Any], before, after) -> tuple[LayerChoice, ...]:
    chosen = notes["settings"]
    reached = notes.get("sparsity_reached") if isinstance(notes.get("sparsity_reached"), Mapping) else {}
    names = [str(name) for name in chosen]
    params, _ = _layer_parts(before, names)
    _, cost = _layer_parts(after, names)
    layers = []
    for name, setting in chosen.items():
        name = str(name)
        get = setting.get if isinstance(setting, Mapping) else (lambda key: None)
        layers.append(LayerChoice(name, params.get(name), _float(get("weight_bits")), _float(get("sparsity")),
                                  _float(reached.get(name)), _float(get("act_bits")), _float(get("channels")),
                                  _float(get("predicted_drop")), cost.get(name)))
    if any(layer.cost is not None for layer in layers):
        return tuple(sorted(layers, key=lambda layer: -(layer.cost or 0.0)))
    return tuple(sorted(layers, key=lambda layer: -(layer.params or 0)))


def is_search(notes: Mapping[str, Any] | None) -> bool:
    """Whether ``notes`` hold a search's per-layer ``settings``."""
    chosen = (notes or {}).get("settings")
    return isinstance(chosen, Mapping) and bool(chosen) and any(
        isinstance(s, Mapping) and any(key in s for key in _SETTING_KEYS) for s in chosen.values())


def search_view(step, before) -> SearchView | None:
    """The :class:`SearchView` of ``step`` (a :class:`~micronet.pipeline.StepRecord`)
    given ``before``, the result it started from; None when its notes hold no
    search ``settings`` (another step, or a search that failed before choosing)."""
    notes = getattr(step, "notes", None) or {}
    if not is_search(notes):
        return None
    options = getattr(step, "options", None) or {}
    after = step.result
    score = after.score.total if after is not None else _float(notes.get("score"))
    drop_budget = next((_float(options[key]) for key in DROP_BUDGETS if _float(options.get(key)) is not None), None)
    sensitivity_from = notes.get("sensitivity_from")
    top1_before, top1_after, measured = _measured(notes, before, after)
    attempts = notes.get("attempts") if isinstance(notes.get("attempts"), (list, tuple)) else ()
    return SearchView(
        objective=_objective(notes), target_score=_float(options.get("target_score")), max_drop=drop_budget,
        predicted_score=_float(notes.get("predicted_score")), score=score,
        predicted_drop=_float(notes.get("predicted_drop")), measured_drop=measured,
        top1_before=top1_before, top1_after=top1_after, nearest_score=_float(notes.get("nearest_score")),
        least_drop=_float(notes.get("least_drop")),
        attempts=tuple(a for a in attempts if isinstance(a, Mapping)), lam=_float(notes.get("lambda")),
        rescores=_float(notes.get("rescores")), seconds=_float(notes.get("seconds")),
        sensitivity_from=None if sensitivity_from is None else str(sensitivity_from),
        layers=_choices(notes, before, after))


# ------------------------------------------------------------------ shared wording


def _budget(view: SearchView, at_most: str = "≤") -> str:
    parts = []
    if view.target_score is not None:
        parts.append(f"score {at_most} {view.target_score:g}")
    if view.max_drop is not None:
        parts.append(f"top-1 drop {at_most} {view.max_drop:g} points")
    return " and ".join(parts) or "none given"


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{100 * fraction:.4g}%"


def _channels(value: float | None) -> str:
    """A fraction (0..1) as a percentage, a count as a whole number."""
    if value is None:
        return "–"
    return f"{value:,.0f}" if value > 1 else f"{100 * value:.4g}%"


def _bits(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _top1s(view: SearchView, arrow: str) -> str:
    if view.top1_before is None or view.top1_after is None:
        return ""
    return f" ({view.top1_before:.2f}% {arrow} {view.top1_after:.2f}%)"


def _attempt(number: int, attempt: Mapping[str, Any]) -> str:
    """One try of a drop-budget search: its predicted-drop budget and what it gave."""
    get = lambda key, spec: _fmt(_float(attempt.get(key)), spec)  # noqa: E731
    return (f"{number}. predicted-drop budget {get('budget', '.2f')} points: predicted drop "
            f"{get('predicted_drop', '.2f')}, score {get('predicted_score', '.4g')}, measured drop "
            f"{get('measured_drop', '.2f')} points")


# ------------------------------------------------------------------ terminal


def _columns(view: SearchView) -> list[tuple[str, Any]]:
    """(heading, cell of a LayerChoice) for the columns to show."""
    columns = [("layer", None), ("params", lambda c: "–" if c.params is None else f"{c.params:,}"),
               ("w bits", lambda c: _bits(c.weight_bits)), ("sparsity", lambda c: _percent(c.sparsity))]
    if view.has("act_bits"):
        columns.append(("a bits", lambda c: _bits(c.act_bits)))
    if view.has("channels"):
        columns.append(("channels", lambda c: _channels(c.channels)))
    if view.has("predicted_drop"):
        columns.append(("pred. drop", lambda c: _fmt(c.predicted_drop, ".2f")))
    if view.has("cost"):
        columns.append(("score part", lambda c: _fmt(c.cost, ".4f")))
    return columns


def _drop_line(view: SearchView) -> str:
    parts = []
    if view.predicted_drop is not None:
        parts.append(f"predicted {view.predicted_drop:.2f} (additive model, calibration split)")
    if view.measured_drop is not None:
        parts.append(f"measured {view.measured_drop:.2f} on the test split{_top1s(view, '->')}")
    return "top-1 drop in points: " + ("; ".join(parts) or "not measured")


def search_text(step, before, *, limit: int = 20, where: str = "history.json", max_name: int = 32) -> list[str]:
    """The terminal lines of a search step: the budget, predicted against
    achieved score and top-1 drop, then the chosen setting of each layer
    (largest part of the score first; at most ``limit``, a last ``...`` line
    naming ``where`` the others are). ``[]`` when the step chose nothing."""
    view = search_view(step, before)
    if view is None:
        return []
    verdict = {True: " (within the budget)", False: " (OVER the budget)", None: ""}[view.meets_budget]
    out = [f"budget {_budget(view, '<=')}: score predicted {_fmt(view.predicted_score, '.4f')}, "
           f"achieved {_fmt(view.score, '.4f')}{verdict}"]
    if view.objective:
        out.append(f"  objective: {view.objective}")
    out.append("  " + _drop_line(view))
    if len(view.attempts) > 1:
        out += [f"  try {_attempt(k, a)}" for k, a in enumerate(view.attempts, 1)]
    columns = _columns(view)
    lines = [[name for name, _ in columns]]
    for choice in view.layers[:limit]:
        shown = printable(choice.name)
        shown = shown if len(shown) <= max_name else "…" + shown[-max_name + 1:]
        lines.append([shown] + [cell(choice) for _, cell in columns[1:]])
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    out += ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines]
    if len(view.layers) > limit:
        more = len(view.layers) - limit
        out.append(f"  ... {more} more layer{'s' * (more != 1)} in {where}")
    return [printable(line) for line in out]


# ------------------------------------------------------------------ HTML


def _pill(ok: bool | None) -> str:
    if ok is None:
        return ""
    return ' <span class="pill good">within the budget</span>' if ok else \
        ' <span class="pill bad">over the budget</span>'


def _facts(view: SearchView) -> str:
    facts = []
    if view.objective:
        facts.append(("Objective", esc(view.objective)))
    facts.append(("Budget", esc(_budget(view))))
    facts.append(("Score", f'predicted <b>{_fmt(view.predicted_score, ".4g")}</b> → achieved '
                           f'<b>{_fmt(view.score, ".4g")}</b> <span class="muted">score units</span>'
                           f'{_pill(view.meets_budget)}'))
    drops = []
    if view.predicted_drop is not None:
        drops.append(f'predicted <b>{view.predicted_drop:.2f}</b> points '
                     f'<span class="muted">(additive model, calibration split)</span>')
    if view.measured_drop is not None:
        drops.append(f"measured <b>{view.measured_drop:.2f}</b> points on the test split{_top1s(view, '→')}")
    facts.append(("Top-1 drop", " · ".join(drops) or '<span class="muted">not measured</span>'))
    how = []
    if view.nearest_score is not None:
        how.append(f"nearest reachable score {view.nearest_score:.4g}")
    if view.least_drop is not None:
        how.append(f"least reachable predicted drop {view.least_drop:.2f} points")
    if view.lam is not None:
        how.append(f"λ = {view.lam:.4g} points per score unit")
    if view.rescores is not None:
        how.append(f"{view.rescores:,.0f} exact re-scores")
    if view.seconds is not None:
        how.append(f"{view.seconds:,.2f} s")
    if view.sensitivity_from:
        how.append(f"sensitivity from {esc(view.sensitivity_from)}")
    if how:
        facts.append(("Allocation", " · ".join(how)))
    if view.attempts:
        facts.append(("Tries", "<br>".join(esc(_attempt(k, a)) for k, a in enumerate(view.attempts, 1))))
    return '<dl class="facts search-facts">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"


def _sparsity_cell(choice: LayerChoice) -> str:
    if choice.sparsity is None:
        return '<td class="num">–</td>'
    tip = f"chosen {_percent(choice.sparsity)}" + ("" if choice.reached is None else
                                                   f", reached {100 * choice.reached:.2f}%")
    width = min(max(100 * choice.sparsity, 0.0), 100.0)
    return (f'<td class="num sparsity" title="{esc(tip)}"><span class="sbar"><i style="width:{width:.1f}%">'
            f'</i></span>{_percent(choice.sparsity)}</td>')


def _row(choice: LayerChoice, view: SearchView) -> str:
    cells = [f'<td class="name">{esc(choice.name)}</td>',
             f'<td class="num">{"–" if choice.params is None else f"{choice.params:,}"}</td>',
             f'<td class="num">{_bits(choice.weight_bits)}</td>', _sparsity_cell(choice)]
    if view.has("act_bits"):
        cells.append(f'<td class="num">{_bits(choice.act_bits)}</td>')
    if view.has("channels"):
        cells.append(f'<td class="num">{_channels(choice.channels)}</td>')
    if view.has("predicted_drop"):
        cells.append(f'<td class="num">{_fmt(choice.predicted_drop, ".2f")}</td>')
    if view.has("cost"):
        cells.append(f'<td class="num">{_fmt(choice.cost, ".4g")}</td>')
    return f'<tr>{"".join(cells)}</tr>'


def _table(view: SearchView) -> str:
    heads = [("layer", ""), ("params", "elements"), ("weight bits", "bits"), ("sparsity", "zeros")]
    heads += [("act bits", "bits")] if view.has("act_bits") else []
    heads += [("channels", "as noted")] if view.has("channels") else []
    heads += [("predicted drop", "top-1 points")] if view.has("predicted_drop") else []
    heads += [("score part", "score units")] if view.has("cost") else []
    sorted_by = "score part" if view.has("cost") else "params"
    cells = []
    for name, unit in heads:
        cls = "" if name == "layer" else ' class="num"'
        sort = ' aria-sort="descending"' if name == sorted_by else ""
        cells.append(f'<th{cls}{sort}>{name}' + (f'<span class="unit">{unit}</span>' if unit else "") + "</th>")
    head = "".join(cells)
    body = "".join(_row(choice, view) for choice in view.layers)
    return (f'<div class="delta-wrap"><table class="search-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{body}</tbody></table></div>')


def search_section(step, before) -> str:
    """The "Search" block of a search step's card (budget, predicted against
    achieved score and drop, the chosen setting of each layer, largest part of
    the score first), or ``""`` when the step's notes hold no ``settings``."""
    view = search_view(step, before)
    if view is None:
        return ""
    count = len(view.layers)
    order = "largest part of the score first" if view.has("cost") else "most parameters first"
    return (f'<div class="search"><h3>Search <span class="muted">{count} layer{"s" * (count != 1)}, '
            f'{order}</span></h3>{_facts(view)}{_table(view)}</div>')
