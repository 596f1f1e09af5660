"""Where a request's default sampling parameters come from: models.yaml, then generation_config.json, then
the built-ins; resolved once per load."""

from __future__ import annotations

import json
import logging

import pytest

from services.common.config import (
    BUILTIN_SAMPLING,
    SOURCE_BUILTIN,
    SOURCE_CHECKPOINT,
    SOURCE_CONFIG,
    ConfigError,
    SamplingDefaults,
    parse_models_config,
    resolve_sampling,
)
from services.common.hf_models import read_generation_config
from services.text_engine.engine.loader import checkpoint_sampling


def from_checkpoint(source) -> SamplingDefaults:
    """What the loader takes from a checkpoint directory's generation_config.json."""
    return checkpoint_sampling(read_generation_config(str(source), {}), str(source))


def test_nothing_set_anywhere_gives_the_builtins():
    resolved = resolve_sampling(SamplingDefaults(), SamplingDefaults())
    assert resolved.values == BUILTIN_SAMPLING
    assert (resolved.values.temperature, resolved.values.top_p, resolved.values.max_tokens) == (0.7, 1.0, None)
    assert set(resolved.sources.values()) == {SOURCE_BUILTIN} and set(resolved.sources) == set(
        SamplingDefaults.model_fields
    )


def test_the_checkpoint_fills_what_models_yaml_leaves_unset():
    resolved = resolve_sampling(SamplingDefaults(), SamplingDefaults(temperature=0.6, top_p=0.95, max_tokens=512))
    assert (resolved.values.temperature, resolved.values.top_p, resolved.values.max_tokens) == (0.6, 0.95, 512)
    assert resolved.values.top_k == 0 and resolved.sources["top_k"] == SOURCE_BUILTIN
    assert resolved.sources["temperature"] == resolved.sources["top_p"] == SOURCE_CHECKPOINT


def test_models_yaml_wins_field_by_field_even_with_zero():
    configured = SamplingDefaults(temperature=0.0, top_k=0)  # 0 is a value, not "unset"
    resolved = resolve_sampling(configured, SamplingDefaults(temperature=0.6, top_p=0.9, top_k=40))
    assert (resolved.values.temperature, resolved.values.top_k, resolved.values.top_p) == (0.0, 0, 0.9)
    assert resolved.sources == {
        "temperature": SOURCE_CONFIG,
        "top_k": SOURCE_CONFIG,
        "top_p": SOURCE_CHECKPOINT,
        "max_tokens": SOURCE_BUILTIN,
        "presence_penalty": SOURCE_BUILTIN,
        "frequency_penalty": SOURCE_BUILTIN,
        "repetition_penalty": SOURCE_BUILTIN,
        "min_p": SOURCE_BUILTIN,
    }


def test_models_yaml_sampling_fields_are_optional_and_still_validated():
    base = {"name": "m", "local_path": "/x"}
    entry = parse_models_config({"models": [base]}).models[0]
    assert entry.sampling == SamplingDefaults() and entry.sampling.temperature is None
    entry = parse_models_config({"models": [{**base, "sampling": {"top_p": 0.95}}]}).models[0]
    assert (entry.sampling.top_p, entry.sampling.temperature) == (0.95, None)
    with pytest.raises(ConfigError, match=r"models\[0\]\.sampling\.top_p"):
        parse_models_config({"models": [{**base, "sampling": {"top_p": 0}}]})


def _checkpoint(tmp_path, generation: dict | None):
    if generation is not None:
        (tmp_path / "generation_config.json").write_text(json.dumps(generation))
    return str(tmp_path)


def test_checkpoint_sampling_reads_only_what_generation_config_sets(tmp_path):
    source = _checkpoint(
        tmp_path,
        {
            "do_sample": True,
            "temperature": 0.7,
            "top_p": 0.95,
            "top_k": 20,
            "max_new_tokens": 4096,
            "max_length": 262144,
            "eos_token_id": 2,
        },
    )
    found = from_checkpoint(source)
    assert found == SamplingDefaults(temperature=0.7, top_p=0.95, top_k=20, max_tokens=4096)


def test_checkpoint_without_generation_config_sets_nothing(tmp_path):
    assert from_checkpoint(_checkpoint(tmp_path, None)) == SamplingDefaults()
    assert from_checkpoint(_checkpoint(tmp_path, {"eos_token_id": 2})) == SamplingDefaults()


def test_out_of_range_and_unapplied_checkpoint_values_are_logged_not_used(tmp_path, caplog):
    source = _checkpoint(tmp_path, {"temperature": 3.5, "top_p": 0.8, "repetition_penalty": 1.05, "typical_p": 0.9})
    with caplog.at_level(logging.WARNING):
        found = from_checkpoint(source)
    assert found == SamplingDefaults(top_p=0.8, repetition_penalty=1.05)  # applied since the sampler has it
    assert "temperature=3.5, out of range" in caplog.text
    assert "typical_p=0.9, which this engine does not apply" in caplog.text


def test_neutral_unapplied_values_are_not_warned_about(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        from_checkpoint(_checkpoint(tmp_path, {"typical_p": 1.0}))
    assert "does not apply" not in caplog.text


def test_a_request_parameter_overrides_the_default_and_bounds_are_the_configs():
    from services.common.config import SamplingDefaults
    from services.common.errors import InvalidRequestError
    from services.common.generation import SamplingParams
    from services.text_engine.engine.admission import sampling_spec

    defaults = SamplingDefaults(temperature=0.7, top_p=0.95, top_k=0, presence_penalty=0.0, frequency_penalty=0.0)
    spec = sampling_spec(SamplingParams(temperature=0.0, seed=5), defaults)
    assert (spec.temperature, spec.top_p, spec.top_k, spec.seed) == (0.0, 0.95, 0, 5)
    # Engines are called directly too (grpcurl): out-of-range values are refused with the parameter named.
    for field, value in (("temperature", 2.5), ("top_p", 0.0), ("top_k", -1), ("frequency_penalty", 3.0)):
        with pytest.raises(InvalidRequestError) as info:
            sampling_spec(SamplingParams(**{field: value}), defaults)
        assert info.value.param == field and field in info.value.message
