"""``transformers:CLASS?key=value&...``: Hugging Face models from their configuration alone.

``CLASS`` must be a model class that ``transformers`` exports (a
``PreTrainedModel`` subclass with its own configuration class, e.g.
``LlamaForCausalLM``, ``BertModel``, ``T5ForConditionalGeneration``); no
other attribute path is looked up. The keyword arguments are values of that
configuration class (``hidden_size=256&num_hidden_layers=2``); a key the
configuration does not have is refused (transformers would keep it silently),
and so are private keys; ``attn_implementation`` may be ``sdpa`` (default)
or ``eager`` (a hub kernel would download code).
The model is built from the configuration alone: no weights, no download,
and under the meta device like every spec without weights.

The configuration gets ``use_cache=False`` (a key/value cache is an output
that export cannot follow) and ``return_dict=True``. The default input is
``(1, 128)`` token ids, or one image at the configured ``image_size``. Transformers is
imported only when such a spec is resolved.
"""
from __future__ import annotations

import difflib
from typing import Any, Mapping

from torch import nn

from .errors import SpecError
from .factories import Target

__all__ = ["transformers_target", "TOKENS"]

#: default input of a text model: one sequence of this many token ids (int64)
TOKENS = 128
#: attention kernels a spec may choose (others, such as hub kernels, would download code)
ATTENTION = ("sdpa", "eager")
HINT_INSTALL = "pip install 'micronet-toolkit[transformers]' (or pip install transformers)"
HINT_CLASS = "name a model class transformers exports, e.g. transformers:LlamaForCausalLM?hidden_size=256"


def transformers_target(name: str, kwargs: Mapping[str, object]) -> Target:
    """The factory of ``transformers:name`` (not yet called): a function of the
    configuration's keyword values returning the model in ``eval()`` mode."""
    transformers = _import()
    cls = _model_class(transformers, name)
    config_class = cls.config_class
    defaults = config_class()
    attention = kwargs.get("attn_implementation", "sdpa")
    if attention not in ATTENTION:
        raise SpecError(f"transformers:{name}: attn_implementation={attention!r} is not one micronet builds "
                        f"offline", hint=f"write attn_implementation= one of {', '.join(ATTENTION)}")
    unknown = [key for key in kwargs if key.startswith("_")
               or key != "attn_implementation" and not hasattr(defaults, key)]
    if unknown:
        known = [k for k in vars(defaults) if not k.startswith("_")]
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"see the documentation of {config_class.__name__}"
        raise SpecError(f"transformers:{name}: {config_class.__name__} has no setting {unknown[0]!r}", hint=hint)
    factory = _factory(cls, config_class)
    return Target(factory, "transformers", f"transformers:{name}", input_shape=_input_shape(cls, defaults, kwargs))


def _import():
    try:
        import transformers
    except ImportError as error:
        raise SpecError("transformers: specs need the transformers package, which is not installed",
                        hint=HINT_INSTALL) from error
    return transformers


def _model_class(transformers, name: str) -> type:
    """The exported ``PreTrainedModel`` subclass ``name``, or a SpecError."""
    base = transformers.PreTrainedModel
    obj = None
    if name.isidentifier() and not name.startswith("_"):
        try:
            obj = getattr(transformers, name)
        except Exception:  # the lazy module raises ImportError / AttributeError / RuntimeError
            obj = None
    if obj is None:
        names = [n for n in getattr(transformers, "__all__", ()) if n.endswith("Model") or "For" in n]
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"did you mean: {', '.join(close)}?" if close else HINT_CLASS
        raise SpecError(f"transformers has no model class {name!r}", hint=hint)
    config_class = getattr(obj, "config_class", None) if isinstance(obj, type) else None
    if not (isinstance(obj, type) and issubclass(obj, base) and obj is not base
            and isinstance(config_class, type) and config_class is not transformers.PretrainedConfig):
        raise SpecError(f"transformers:{name} is not a model class with its own configuration "
                        f"(a transformers.PreTrainedModel subclass)", hint=HINT_CLASS)
    return obj


def _factory(cls: type, config_class: type):
    def build(**values: Any) -> nn.Module:
        config = config_class(**values)
        config.use_cache = False  # a cache is an output export cannot follow (GPT-2 defaults to one)
        config.return_dict = True
        return cls(config).eval()

    build.__name__ = build.__qualname__ = cls.__name__
    return build


def _input_shape(cls: type, defaults: Any, kwargs: Mapping[str, object]) -> tuple[int, ...] | None:
    """The first input, batch 1: ``(1, TOKENS)`` token ids for a text model
    (an encoder-decoder also needs ``decoder_input_ids``, CLIP ``pixel_values``:
    give ``inputs=``), ``(1, channels, size, size)`` for an image model whose
    configuration says its image size; else None."""
    main = getattr(cls, "main_input_name", "input_ids")
    if main == "input_ids":
        return (1, TOKENS)
    if main == "pixel_values":
        size = kwargs.get("image_size", getattr(defaults, "image_size", None))
        channels = kwargs.get("num_channels", getattr(defaults, "num_channels", 3))
        if isinstance(size, int) and isinstance(channels, int):
            return (1, channels, size, size)
    return None
