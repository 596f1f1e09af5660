"""What vLLM must be told about a checkpoint because it does not read it from config.json: its `hf_overrides`.

Apart from vllm_source.py (which imports vLLM) so that it runs, and is tested, in any venv.

Llama-4 attention scaling (Ministral-3): past `original_max_position_embeddings` the queries are multiplied by
`1 + beta * log(1 + floor(position / original_max_position_embeddings))`. config.json keeps beta and that length in
the text config's `rope_parameters` (`llama_4_scaling_beta`, `original_max_position_embeddings`), where
transformers' Ministral3 reads them. vLLM runs `Ministral3ForCausalLM`, and Mistral3's language model, with its
`MistralForCausalLM`, whose attention reads only `llama_4_scaling = {"original_max_position_embeddings", "beta"}`
(the layout its reader of Mistral's native params.json writes); without the override the model runs unscaled
there and answers differently from transformers once a sequence passes that length. Both apply the same formula
(transformers 5.19 and 5.24 `get_llama_4_attn_scale`, vLLM 0.32 `MistralAttention._get_llama_4_attn_scale`):
positions from 0, floor division, natural log, on the queries after the rotary embedding. They round apart only
in half precision (transformers casts the factor to the queries' dtype before multiplying, vLLM after).
"""

from __future__ import annotations

from services.common.hf_models import ModelLoadError


def hf_overrides(config) -> dict:
    """vLLM's `hf_overrides` for a checkpoint whose transformers config is `config` (the whole checkpoint's, as
    config.json has it); {} when vLLM reads everything it needs itself.

    vLLM applies a dict override to that same top-level config, recursing into sub-configs: so a text config
    inside a multimodal one (Mistral3's `text_config`) gets its settings under that attribute's name."""
    text = config.get_text_config()
    scaling = llama_4_scaling(text)
    if scaling is None:
        return {}
    overrides = {"llama_4_scaling": scaling}
    if text is config:
        return overrides
    (name,) = [name for name, value in vars(config).items() if value is text]
    return {name: overrides}


def llama_4_scaling(text_config) -> dict | None:
    """The text config's llama-4 attention scaling in vLLM's layout, or None when it has none."""
    rope = getattr(text_config, "rope_parameters", None) or {}
    beta = rope.get("llama_4_scaling_beta")
    if beta is None:
        return None
    original = rope.get("original_max_position_embeddings")
    if original is None:  # transformers could not run it either: its scale divides by this length
        raise ModelLoadError("rope_parameters has llama_4_scaling_beta but no original_max_position_embeddings")
    return {"original_max_position_embeddings": original, "beta": beta}
