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
that export cannot follow) and ``return_dict=True``. The default inputs come
from the configuration (:func:`default_inputs`): ``(1, T)`` token ids, T = 128
capped at ``max_position_embeddings``; one image at the configured
``image_size``; both for a text-and-image model (CLIP); ``decoder_input_ids``
too for an encoder-decoder (T5). Transformers is imported only when such a
spec is resolved.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Mapping

from torch import nn

from .errors import SpecError
from .factories import Target

__all__ = ["transformers_target", "TOKENS", "default_inputs", "default_inputs_of", "max_positions"]

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
    """The first default input's shape (see :func:`default_inputs`), from the
    configuration ``kwargs`` make; None when there is none."""
    try:
        config = type(defaults)(**kwargs)
    except Exception:  # the factory reports a bad configuration itself, when it is built
        config = defaults
    inputs = default_inputs(cls, config)
    return next(iter(inputs.values()))[0] if inputs else None


def default_inputs(cls: type, config: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """The inputs a ``transformers`` model class gets when none are given,
    batch 1, from its configuration: ``{parameter: (shape, dtype name)}``.

    - token ids ``input_ids`` ``(1, T)``, int64, T = :data:`TOKENS` (128)
      capped at the text configuration's ``max_position_embeddings`` (a
      BERT with 64 positions gets 64 tokens, CLIP's text tower 77);
    - images ``pixel_values`` ``(1, channels, size, size)``, float32, at the
      (vision) configuration's ``image_size`` and ``num_channels``;
    - an encoder-decoder (``is_encoder_decoder``: T5, BART) also gets
      ``decoder_input_ids`` ``(1, T)``; a model taking both text and images
      (CLIP, SigLIP) gets both.

    Empty when the class's main input is none of these (audio: give inputs)."""
    params = _forward_names(cls)
    main = getattr(cls, "main_input_name", "input_ids")
    inputs: dict[str, tuple[tuple[int, ...], str]] = {}
    tokens = _tokens(config)
    if main == "input_ids":
        inputs["input_ids"] = ((1, tokens), "int64")
    image = _image_shape(config)
    if image is not None and (main == "pixel_values" or main == "input_ids" and "pixel_values" in params):
        inputs["pixel_values"] = (image, "float32")
    if main == "input_ids" and getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        inputs["decoder_input_ids"] = ((1, tokens), "int64")
    return inputs


def default_inputs_of(model: nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """:func:`default_inputs` of a built ``transformers`` model (its class and config)."""
    return default_inputs(type(model), model.config)


def _forward_names(cls: type) -> set[str]:
    try:
        return set(inspect.signature(cls.forward).parameters)
    except (TypeError, ValueError):
        return set()


def max_positions(config: Any) -> int | None:
    """The text configuration's ``max_position_embeddings`` (None when it has none)."""
    try:
        text = config.get_text_config()
    except Exception:
        text = config
    positions = getattr(text, "max_position_embeddings", None)
    return positions if isinstance(positions, int) and positions > 0 else None


def _tokens(config: Any) -> int:
    """:data:`TOKENS`, capped at the text configuration's position count."""
    return min(TOKENS, max_positions(config) or TOKENS)


def _image_shape(config: Any) -> tuple[int, ...] | None:
    """``(1, channels, size, size)`` from the configuration or its ``vision_config``."""
    for source in (config, getattr(config, "vision_config", None)):
        size = getattr(source, "image_size", None)
        channels = getattr(source, "num_channels", 3)
        if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
            size = size[0]
        if isinstance(size, int) and isinstance(channels, int):
            return (1, channels, size, size)
    return None
