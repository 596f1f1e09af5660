"""Load a text model and its tokenizer from a hub id or a local directory.

Multimodal checkpoints whose text part we serve alone (the brief's Ministral-3 is
`Mistral3ForConditionalGeneration`, text part `Ministral3ForCausalLM`) are loaded text-only: the text
config, and a key mapping that strips the language-model prefix. The vision tower's weights are then
"unexpected" and skipped; a weight that is *missing* would be silently random, so it fails the load, and so
does a skipped quantization scale (see quantization.py: the text-only load keeps the checkpoint's
`quantization_config`). The top-level `tie_word_embeddings` reaches the text config: the 3B stores no
`lm_head.weight` and ties it to the embeddings.

A `vision_mode: native` entry (`native_vision=True`) is the opposite: the whole checkpoint is loaded
(`AutoModelForImageTextToText`, vision tower and projector kept) with its family's image adapter
(services/common/multimodal/); the batching loops drive the VLM itself (its forward without images runs its
language model). Idle unload drops the whole model, vision weights included.

The sampling defaults are resolved here, once per load: models.yaml, then the checkpoint's
`generation_config.json`, then the built-ins (`services.common.config.resolve_sampling`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from pydantic import ValidationError
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, GenerationConfig

from services.common.config import ResolvedSampling, SamplingDefaults, resolve_sampling
from services.common.hf_models import (
    NOT_TEXT_KEY,
    TEXT_ONLY_KEY_MAPPING,
    ModelLoadError,
    eos_token_ids,
    read_generation_config,
    resolve_device,
    resolve_dtype,
    stand_in_for,
)
from services.common.multimodal import VisionFamily, load_family
from services.common.tokenizers import load_tokenizer

from .quantization import (
    carry_quantization_config,
    check_skipped_scales,
    import_error,
    plan_quantization,
    quantization_config_of,
)

log = logging.getLogger(__name__)


# Checkpoint layouts of multimodal models seen in the wild: transformers 5 (`model.language_model.*`,
# `lm_head.*`) and the older one (`language_model.model.*`, `language_model.lm_head.*`).
@dataclass
class LoadedModel:
    """A model ready for the batching loop."""

    model: torch.nn.Module | None  # None when another engine core holds the weights (backend: vllm)
    tokenizer: object
    config: object  # the checkpoint's config.json as transformers reads it: text_config, or holding it (multimodal)
    text_config: object
    eos_token_ids: list[int]
    max_context: int
    dtype: torch.dtype
    device: torch.device
    stand_in_for: str
    sampling: ResolvedSampling  # effective defaults of requests that leave a parameter out
    quantization: str = ""  # e.g. "fp8, dequantized to float32 (no FP8 kernel on cpu)"; "" when unquantized
    family: VisionFamily | None = None  # native vision: how images become this model's inputs; None: text only
    architectures: tuple[str, ...] = ()  # the checkpoint's config.json `architectures` (the whole model's)


def _is_multimodal(config) -> bool:
    return getattr(config, "text_config", None) is not None and config.get_text_config() is not config


def load_text_model(
    source: str,
    *,
    dtype: str,
    device: str,
    revision: str | None = None,
    trust_remote_code: bool = False,
    max_model_len: int | None = None,
    sampling: SamplingDefaults | None = None,
    gguf_file: str | None = None,
    native_vision: bool = False,
    weights: bool = True,
) -> LoadedModel:
    """Load weights, tokenizer and generation defaults; raise ModelLoadError on anything left random.

    `sampling` is the model's `sampling:` block of models.yaml (unset fields defer to the checkpoint).
    `gguf_file`: the model is that GGUF file (in `source`, see gguf_loading.py), dequantized at load.
    `native_vision`: load the whole VLM and its image adapter (`LoadedModel.family`).
    `weights=False`: everything but the weights (`model` is None), for an engine core that loads them (vLLM)."""
    if gguf_file is not None:
        from .gguf_loading import load_gguf_text_model  # imports this module: imported here, not at the top

        return load_gguf_text_model(
            source,
            gguf_file,
            dtype=dtype,
            device=device,
            revision=revision,
            max_model_len=max_model_len,
            sampling=sampling,
        )
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    common = {"revision": revision, "trust_remote_code": trust_remote_code}
    try:
        config = AutoConfig.from_pretrained(source, **common)
        tokenizer = load_tokenizer(source, **common)  # TokenizersBackend, on purpose: services/common/tokenizers.py
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load config/tokenizer from {source!r}: {exc}") from exc
    except ImportError as exc:
        raise import_error(source, exc) from exc

    quantization = quantization_config_of(config)
    plan = plan_quantization(quantization, torch_device)
    family = None
    if native_vision:
        if not _is_multimodal(config):
            raise ModelLoadError(
                f"{source!r} is not a vision-language checkpoint (config {type(config).__name__} has "
                "no vision part): vision_mode 'native' needs one"
            )
        try:
            family = load_family(source, config, tokenizer, **common)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the image processor of {source!r} for native vision: {exc}") from exc
        text_config = config.get_text_config()
        model_cls = AutoModelForImageTextToText
        extra = {}
    elif _is_multimodal(config):
        text_config = config.get_text_config()
        # The full model ties lm_head by the top-level flag; the text model alone must do the same.
        text_config.tie_word_embeddings = getattr(config, "tie_word_embeddings", text_config.tie_word_embeddings)
        model_cls = _text_part_of(AutoModelForCausalLM._model_mapping[type(text_config)])
        extra = {"key_mapping": TEXT_ONLY_KEY_MAPPING}
    else:
        text_config = config
        model_cls = AutoModelForCausalLM
        extra = {}
    model_config = config if native_vision else text_config
    model = (
        _load_weights(source, model_cls, model_config, quantization, plan, torch_dtype, torch_device, common, extra)
        if weights
        else None
    )
    return with_checkpoint_defaults(
        model,
        tokenizer,
        text_config,
        generation_dir=source,
        common=common,
        sampling=sampling,
        max_model_len=max_model_len,
        dtype=torch_dtype,
        device=torch_device,
        config=config,
        stand_in_for=stand_in_for(source),
        quantization=plan.describe(torch_dtype) if plan else "",
        family=family,
        architectures=tuple(getattr(config, "architectures", None) or ()),
    )


def with_checkpoint_defaults(
    model,
    tokenizer,
    text_config,
    *,
    generation_dir: str,
    common: dict,
    sampling: SamplingDefaults | None,
    max_model_len: int | None,
    **rest,
) -> LoadedModel:
    """The `LoadedModel` of a loaded model: its end-of-sequence ids, context and sampling defaults from the
    `generation_config.json` in `generation_dir` (models.yaml's `sampling` first), the same for every format."""
    generation = read_generation_config(generation_dir, common)
    resolved = resolve_sampling(sampling or SamplingDefaults(), checkpoint_sampling(generation, generation_dir))
    log.info(
        "Sampling defaults of %s: %s",
        generation_dir,
        ", ".join(f"{k}={v} ({resolved.sources[k]})" for k, v in resolved.values.model_dump().items()),
    )
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        text_config=text_config,
        eos_token_ids=eos_token_ids(generation, tokenizer),
        max_context=max_context(text_config, max_model_len),
        sampling=resolved,
        **rest,
    )


def _text_part_of(model_cls: type) -> type:
    """`model_cls` told that the checkpoint's vision weights are left out on purpose.

    transformers reports every checkpoint key the model does not use as UNEXPECTED, in a table logged as a warning
    at each load: for a text-only load of a multimodal checkpoint that is the whole vision tower, at every normal
    start. The class's own ignore patterns are how a model says which keys it skips by design; a subclass carries
    ours so transformers' class stays as it is. Skipped quantization scales of the text model are still reported
    (quantization.check_skipped_scales), and a missing weight still fails the load."""
    ignored = {*(model_cls._keys_to_ignore_on_load_unexpected or ()), NOT_TEXT_KEY.pattern}
    return type(
        model_cls.__name__,
        (model_cls,),
        {"_keys_to_ignore_on_load_unexpected": sorted(ignored), "__module__": model_cls.__module__},
    )


def _load_weights(source, model_cls, model_config, quantization, plan, torch_dtype, torch_device, common, extra):
    """The weights, on the device; ModelLoadError when one would be left random (or a quantization scale skipped)."""
    if quantization is not None:
        carry_quantization_config(model_config, quantization, plan)
    try:
        model, info = model_cls.from_pretrained(
            source, config=model_config, dtype=torch_dtype, output_loading_info=True, **common, **extra
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load weights from {source!r}: {exc}") from exc
    except ImportError as exc:
        raise import_error(source, exc) from exc
    missing = list(info.get("missing_keys", [])) + [k for k, *_ in info.get("mismatched_keys", [])]
    if missing:
        raise ModelLoadError(
            f"{source!r}: {len(missing)} weight(s) missing from the checkpoint would be randomly initialised "
            f"(e.g. {', '.join(sorted(missing)[:5])}); refusing to serve it"
        )
    check_skipped_scales(source, info.get("unexpected_keys", []), plan)
    return model.to(torch_device).eval()


# generation_config.json key -> our sampling default. Like vLLM, `do_sample` is not read (a request without
# parameters samples at the resolved temperature) and neither is `max_length` (prompt + completion: the context).
_CHECKPOINT_SAMPLING_KEYS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "max_new_tokens": "max_tokens",
    "repetition_penalty": "repetition_penalty",
    "min_p": "min_p",
}
# Set in some checkpoints but not applied by this engine's sampler: said in the log, never shown as in effect.
# Each with its neutral value (a checkpoint that sets that is not warned about).
_NOT_APPLIED = {"typical_p": 1.0, "no_repeat_ngram_size": 0}


def max_context(text_config, max_model_len: int | None) -> int:
    """The context a request may fill: the model's own maximum, capped by `max_model_len`."""
    own = getattr(text_config, "max_position_embeddings", None) or 4096
    return own if max_model_len is None else min(own, max_model_len)


def checkpoint_sampling(generation: GenerationConfig | None, source: str) -> SamplingDefaults:
    """The sampling defaults `generation_config.json` sets (fields it does not set stay None); `source` names
    the checkpoint in warnings."""
    if generation is None:
        return SamplingDefaults()  # no generation_config.json
    found = {}
    for key, name in _CHECKPOINT_SAMPLING_KEYS.items():
        value = getattr(generation, key, None)
        if value is None:
            continue
        try:
            SamplingDefaults(**{name: value})
        except ValidationError:
            log.warning(
                "%s: generation_config.json sets %s=%r, out of range for %s; ignoring it", source, key, value, name
            )
            continue
        found[name] = value
    ignored = {
        key: value
        for key, neutral in _NOT_APPLIED.items()
        if (value := getattr(generation, key, None)) is not None and value != neutral
    }
    if ignored:
        log.warning(
            "%s: generation_config.json sets %s, which this engine does not apply",
            source,
            ", ".join(f"{k}={v}" for k, v in ignored.items()),
        )
    return SamplingDefaults(**found)
