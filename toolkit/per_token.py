"""Ops per token of a language model: a prefill of T tokens, and one decode step.

MicroNet 2019's WikiText-103 rule counts math ops *per token, online, batch
1*: the model reads one token at a time and predicts the next, carrying what
it knows of the preceding context. :func:`audit_per_token` audits a language
model twice, both shape-only on the meta device:

- **prefill**: the forward of ``context`` tokens at once (``input_ids``
  ``[1, T]``); its figures divided by T are the average cost of a token
  when a whole window is read in one pass;
- **decode**: one new token (``input_ids`` ``[1, 1]``) after ``context``
  tokens. A ``transformers`` causal LM gets a key/value cache of length T
  (a ``DynamicCache`` built inside the audited forward from one stacked meta
  tensor, so nothing is allocated): its attention reads T + 1 keys. A
  recurrent model (``nn.LSTM`` / ``GRU`` / ``RNN``, e.g.
  ``micronet:wikitext103_lstm``) carries its state, so its decode step is
  its one-token forward.

The decode step is the one scored (:attr:`PerToken.result`): it is the
online per-token cost the rule defines. The prefill average is shown beside
it; it is not the rule's figure (it assumes the whole window is known in
advance) and, as the counters count causal attention over the full T x T
scores, it is not a lower bound of the decode step either. The key/value
cache is an activation, not a parameter: it adds no storage.
"""
from __future__ import annotations

import inspect
import json
import sys
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from .errors import UsageError, first_line
from .models_transformers import TOKENS, max_positions

__all__ = ["PerToken", "audit_per_token", "write_per_token_json", "per_token_lines", "per_token_section",
           "PER_TOKEN_KEYS"]

#: totals divided by T for the prefill's per-token figures (counts of operations)
PER_TOKEN_KEYS = ("mults", "adds", "other_ops", "ops", "macs")
#: context length (tokens) when none is given
DEFAULT_CONTEXT = TOKENS


@dataclass(frozen=True)
class PerToken:
    """Both audits of a language model at ``context`` tokens.

    ``prefill`` audits ``[1, context]`` token ids at once, ``decode`` one
    token after ``context`` (with a key/value cache of that length for a
    transformer); ``kind`` is ``"kv-cache"`` or ``"recurrent"``. The
    decode step is the figure the track scores (:attr:`result`)."""

    context: int
    prefill: Any  # micronet.audit.Result
    decode: Any  # micronet.audit.Result
    kind: str
    scored: str = "decode"

    @property
    def result(self):
        """The scored audit: the decode step (ops per token, online)."""
        return self.decode

    def prefill_per_token(self) -> dict[str, float]:
        """The prefill's operation counts divided by ``context`` (per token),
        its storage (parameters, 32-bit equivalents) unchanged, and the score
        the prefill average would get (storage term + ops term / T)."""
        totals = self.prefill.totals
        figures = {key: totals[key] / self.context for key in PER_TOKEN_KEYS}
        score = self.prefill.score
        figures.update(storage=totals["storage"], score=score.storage_term + score.ops_term / self.context)
        return figures

    def decode_per_token(self) -> dict[str, float]:
        """The decode step's operation counts (one token), storage and score."""
        totals = self.decode.totals
        figures = {key: totals[key] for key in PER_TOKEN_KEYS}
        figures.update(storage=totals["storage"], score=self.decode.score.total)
        return figures

    def to_dict(self) -> dict[str, Any]:
        """The ``"per_token"`` entry of the JSON document: context (tokens),
        which figure is scored and why, and both per-token figures."""
        return {
            "context": self.context,
            "scored": self.scored,
            "kind": self.kind,
            "rule": "ops per token, online, batch 1: one decode step after `context` tokens",
            "prefill": {"tokens": self.context, "inputs": [i.to_dict() for i in self.prefill.inputs],
                        "totals": dict(self.prefill.totals), "per_token": self.prefill_per_token()},
            "decode": {"tokens": 1, "cache": self.context if self.kind == "kv-cache" else 0,
                       "inputs": [i.to_dict() for i in self.decode.inputs], "per_token": self.decode_per_token()},
        }


def audit_per_token(model: nn.Module | str, context: int = DEFAULT_CONTEXT, track: str = "wikitext103",
                    rulebook: str = "micronet-2019", *, weights: str | None = None, trust: bool = False,
                    registries=None, **options: Any) -> PerToken:
    """Audit a language model per token: a prefill of ``context`` tokens
    (figures / T) and one decode step after ``context`` tokens (scored).

    ``model`` is a spec or module: a ``transformers`` causal LM (decoded
    with a key/value cache of ``context`` tokens) or a model with a
    recurrent layer (decoded as its one-token forward). ``context`` is a
    count of tokens (>= 1). ``options`` are :func:`micronet.audit`'s
    scoring options (``bits``, ``act_bits``, ``accumulator_bits``,
    ``freebie``, ``strict``); the inputs are chosen here, so ``inputs``,
    ``input_shape`` and ``data`` are refused. Returns a :class:`PerToken`."""
    from .manager import default_registries
    from .resolve import resolve_model

    if not isinstance(context, int) or isinstance(context, bool) or context < 1:
        raise UsageError(f"context={context!r}: expected a number of tokens >= 1", hint="e.g. --per-token 128")
    for name in ("inputs", "input_shape", "data", "input_dtype"):
        if options.get(name) is not None:
            raise UsageError(f"a per-token audit chooses its inputs ({context} token ids, then one): "
                             f"{name} (--{name.replace('_', '-').replace('-shape', '')}) cannot be given with it",
                             hint="drop --input/--inputs/--input-dtype/--data, or drop --per-token")
        options.pop(name, None)
    registries = registries or default_registries()
    # resolving puts a module in eval mode: note the caller's modes, to give them back
    modes = {m: m.training for m in model.modules()} if isinstance(model, nn.Module) else {}
    try:
        resolved = resolve_model(model, weights=weights, trust=trust, models=registries.models)
        return _both(resolved, context, dict(track=track, rulebook=rulebook, registries=registries, **options))
    finally:
        for child, training in modes.items():
            child.training = training


def _both(resolved, context: int, settings: dict[str, Any]) -> PerToken:
    """The prefill and decode audits of a resolved model."""
    from .audit import audit

    module = resolved.model
    if _is_transformers(module):
        past = _cache_shape(module, context)
        step = DecodeStep(module)  # logits only: a cache among the outputs would stop torch.export
        prefill = audit(step, inputs={"input_ids": ((1, context), "int64")}, **settings)
        decode = audit(step, inputs={"input_ids": ((1, 1), "int64"), "past": (past, _float_dtype(module))},
                       **settings)
        kind = "kv-cache"
    elif any(isinstance(m, nn.RNNBase) for m in module.modules()):
        prefill = audit(module, input_shape=(1, context), **settings)
        decode = audit(module, input_shape=(1, 1), **settings)
        kind = "recurrent"
    else:
        raise UsageError(f"{resolved.name}: a per-token audit needs a transformers causal LM (decoded with a "
                         "key/value cache) or a recurrent model (nn.LSTM/GRU/RNN, decoded one token at a time)",
                         hint="audit other models with --input 1xT, or wrap one so it takes one token")
    return PerToken(context, replace(prefill, model=resolved.name), replace(decode, model=resolved.name), kind)


def _is_transformers(module: nn.Module) -> bool:
    transformers = sys.modules.get("transformers")  # never imported here: a model of it imported it
    return transformers is not None and isinstance(module, transformers.PreTrainedModel)


def _float_dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.dtype.is_floating_point), torch.float32)


def _cache_shape(module: nn.Module, context: int) -> tuple[int, ...]:
    """``(layers, 2, 1, kv_heads, context, head_dim)``: the key/value cache a
    forward of ``context`` tokens leaves, read from a run under fake tensors
    (shapes only, nothing computed). Layers whose caches differ in shape are refused."""
    if getattr(module, "main_input_name", "input_ids") != "input_ids" or \
            getattr(module.config, "is_encoder_decoder", False):
        raise UsageError(f"{type(module).__name__}: a per-token audit decodes a causal language model "
                         "(token ids in, a key/value cache)", hint="use a *ForCausalLM / *LMHeadModel class")
    positions = max_positions(module.config)
    if positions is not None and context + 1 > positions:
        raise UsageError(f"{type(module).__name__}: a cache of {context} tokens and the decoded one need "
                         f"{context + 1} positions, and the model has {positions} (max_position_embeddings)",
                         hint=f"give a context of at most {positions - 1} tokens (--per-token {positions - 1})")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from .steps import model_device

    try:  # fake tensors: shapes only, whether the weights are on the meta device or real
        with torch.no_grad(), FakeTensorMode(allow_non_fake_inputs=True):
            ids = torch.zeros((1, context), dtype=torch.int64, device=model_device(module))
            out = module(input_ids=ids, use_cache=True)
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        shapes = {(tuple(layer.keys.shape), tuple(layer.values.shape)) for layer in cache.layers}
        layers = len(cache.layers)
    except Exception as error:  # a model without a cache, or with another cache layout
        raise UsageError(f"{type(module).__name__}: cannot build its key/value cache of {context} tokens "
                         f"({type(error).__name__}: {first_line(error)})",
                         hint="a per-token audit needs a causal LM that returns a DynamicCache") from error
    if len(shapes) != 1 or len({keys for keys, _ in shapes} | {values for _, values in shapes}) != 1:
        raise UsageError(f"{type(module).__name__}: its layers' key/value caches differ in shape "
                         f"({sorted(shapes)}), which a per-token audit does not build yet",
                         hint="audit a prefill with --input 1xT instead")
    (keys, _), = shapes
    return (layers, 2, *keys)


class DecodeStep(nn.Module):
    """A ``transformers`` causal LM returning logits alone. ``forward(input_ids,
    past)``: one decode step, the model's ``DynamicCache`` built from ``past``
    (keys and values of every layer stacked: ``[layers, 2, 1, kv_heads, T,
    head_dim]``); without ``past``, a prefill without a cache. It shares the
    model's submodules (same names in the records) and changes nothing in it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self._modules = model._modules  # the same children under the same names; the model is not touched
        self._parameters = model._parameters
        self._buffers = model._buffers
        self._model = (model,)  # not a submodule: its children are ours already
        self.training = False

    def forward(self, input_ids: torch.Tensor, past: torch.Tensor | None = None) -> torch.Tensor:
        from transformers import DynamicCache

        model = self._model[0]
        if past is None:
            return model(input_ids=input_ids, use_cache=False).logits
        cache = DynamicCache(config=model.config)
        for layer in range(past.shape[0]):
            cache.update(past[layer, 0], past[layer, 1], layer)
        return model(input_ids=input_ids, use_cache=True, **{_cache_keyword(model): cache}).logits


def _cache_keyword(model: nn.Module) -> str:
    """``cache`` (transformers >= 5.x names it so) or ``past_key_values`` (older releases)."""
    try:
        names = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        names = {}
    return "cache" if "cache" in names else "past_key_values"


def per_token_lines(per_token: PerToken) -> list[tuple[str, str]]:
    """``(label, value)`` lines of both per-token figures (prefill / T, the
    decode step), saying which one is scored."""
    from .reports.format import si

    t = per_token.context
    pre, dec = per_token.prefill_per_token(), per_token.decode_per_token()
    step = f"one token after a key/value cache of {t}" if per_token.kind == "kv-cache" else \
        "one token, its state carried (recurrent)"
    return [
        ("prefill", f"{t} tokens at once / {t}: {si(pre['ops'])} ops ({si(pre['macs'])} MACs) per token; "
                    f"score {pre['score']:.4f}"),
        ("decode", f"{step}: {si(dec['ops'])} ops ({si(dec['macs'])} MACs) per token; "
                   f"score {dec['score']:.4f} <- scored"),
    ]


def per_token_section(per_token: PerToken):
    """The report section (terminal table, JSON ``sections``, HTML page) of
    both per-token figures; its title says the context and the rule."""
    from .reports.sections import ReportSection

    title = (f"per token: context T = {per_token.context} tokens, batch 1 ({per_token.decode.track.name} "
             "scores the decode step: ops per token, online)")
    return ReportSection("per-token", title, lambda result: per_token_lines(per_token))


def write_per_token_json(per_token: PerToken, path: str, what_if=None, sections=None) -> str:
    """The decode step's audit JSON (``--json``) with a ``"per_token"`` entry
    (:meth:`PerToken.to_dict`), written atomically; returns the path."""
    from .fileio import atomic_write_text
    from .reports.json_report import clean, render_json

    document = json.loads(render_json(per_token.result, what_if, sections))
    document["per_token"] = clean(per_token.to_dict())
    return atomic_write_text(path, json.dumps(document, indent=1) + "\n")
