"""What the vLLM backend tells vLLM on top of config.json (`hf_overrides`): Ministral-3's llama-4 attention
scaling moved from transformers' layout to vLLM's, at the level vLLM applies it. That vLLM then answers as
transformers does is tests/e2e/test_vllm_ministral3.py's."""

from __future__ import annotations

import pytest
from transformers import LlamaConfig, Ministral3Config, Mistral3Config, PixtralVisionConfig

from services.common.hf_models import ModelLoadError
from services.text_engine.engine.loader import load_text_model
from services.text_engine.engine.vllm_overrides import hf_overrides

# transformers' defaults for Ministral3 are the hub model's: YaRN from 16,384 positions, llama-4 beta 0.1.
HUB_SCALING = {"llama_4_scaling": {"original_max_position_embeddings": 16384, "beta": 0.1}}


def test_a_text_only_ministral3_gets_the_scaling_at_the_top():
    assert hf_overrides(Ministral3Config()) == HUB_SCALING


def test_a_mistral3_checkpoint_gets_it_in_its_text_config():
    config = Mistral3Config(text_config=Ministral3Config(), vision_config=PixtralVisionConfig())
    assert hf_overrides(config) == {"text_config": HUB_SCALING}


def test_the_values_come_from_the_checkpoints_rope_parameters():
    rope = {**Ministral3Config().rope_parameters, "original_max_position_embeddings": 32, "llama_4_scaling_beta": 0.5}
    scaling = hf_overrides(Ministral3Config(rope_parameters=rope))["llama_4_scaling"]
    assert scaling == {"original_max_position_embeddings": 32, "beta": 0.5}


def test_a_model_without_llama_4_scaling_needs_no_override():
    assert hf_overrides(LlamaConfig()) == {}
    rope = {k: v for k, v in Ministral3Config().rope_parameters.items() if k != "llama_4_scaling_beta"}
    assert hf_overrides(Ministral3Config(rope_parameters=rope)) == {}


def test_a_beta_without_its_original_length_is_refused():
    rope = {"rope_type": "default", "rope_theta": 1e6, "llama_4_scaling_beta": 0.1}
    with pytest.raises(ModelLoadError, match="original_max_position_embeddings"):
        hf_overrides(Ministral3Config(rope_parameters=rope))


def test_the_loaded_stand_in_carries_the_config_vllm_is_told_about(tiny_models):
    # What the adapter passes: LoadedModel.config is the whole Mistral3 config, as vLLM reads it.
    loaded = load_text_model(str(tiny_models["text"]), dtype="f32", device="cpu", weights=False)
    # The stand-in's 4,096 positions, original context 1/16 of them (model_builder/text_model.py's ministral3_rope).
    scaling = {"original_max_position_embeddings": 256, "beta": 0.1}
    assert hf_overrides(loaded.config) == {"text_config": {"llama_4_scaling": scaling}}
