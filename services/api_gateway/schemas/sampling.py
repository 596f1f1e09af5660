"""The sampling fields every OpenAI-style protocol accepts (Chat Completions, Responses, legacy Completions): one
definition, validated as OpenAI and vLLM validate them, with the bounds models.yaml validates its defaults with.

Beyond OpenAI's own (temperature, top_p, seed, stop, the two penalties, logit_bias), vLLM's extras are accepted at
the top level, as the SDK's `extra_body` puts them: top_k, min_p, repetition_penalty, stop_token_ids, ignore_eos.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.common.config import SamplingDefaults

MAX_LOGIT_BIAS = 300  # entries, as OpenAI
INT32 = 2**31
UINT32 = 2**32  # the proto's token counts and top_k are uint32: larger values could not be sent


def sampling_bounds(name: str) -> dict[str, float]:
    """The bounds models.yaml validates the default of `name` with: one definition for both."""
    return {
        k: getattr(m, k)
        for m in SamplingDefaults.model_fields[name].metadata
        for k in ("gt", "ge", "lt", "le")
        if hasattr(m, k)
    }


TokenId = Annotated[int, Field(ge=0, lt=INT32)]


def min_tokens_within(min_tokens: int | None, max_tokens: int | None) -> int | None:
    """`min_tokens`, checked against the request's token limit (a field validator's body, for each protocol's
    name of that limit)."""
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise ValueError(f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})")
    return min_tokens


class SamplingFields(BaseModel):
    """How to sample, whatever the protocol; None leaves the model's default."""

    model_config = ConfigDict(extra="ignore")

    temperature: float | None = Field(None, **sampling_bounds("temperature"))
    top_p: float | None = Field(None, **sampling_bounds("top_p"))
    top_k: int | None = Field(None, **sampling_bounds("top_k"), description="vLLM extra: 0 disables it.")
    seed: int | None = Field(None, ge=-(2**63), lt=2**63, description="Choice i of n samples with seed + i.")
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(None, **sampling_bounds("presence_penalty"))
    frequency_penalty: float | None = Field(None, **sampling_bounds("frequency_penalty"))
    repetition_penalty: float | None = Field(
        None,
        **sampling_bounds("repetition_penalty"),
        description="vLLM extra: multiplicative penalty on tokens seen so far; 1 disables it.",
    )
    min_p: float | None = Field(None, **sampling_bounds("min_p"), description="vLLM extra: 0 disables it.")
    stop_token_ids: list[TokenId] | None = Field(None, description="vLLM extra: token ids that end the answer.")
    ignore_eos: bool | None = Field(None, description="vLLM extra: generate up to max_tokens past end of sequence.")
    logit_bias: dict[str, float] | None = Field(
        None,
        description=f"Token id (as a string) -> bias in [-100, 100] "
        f"added to its logit; at most {MAX_LOGIT_BIAS} entries.",
    )

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_biases(cls, value):
        if value is None:
            return value
        if len(value) > MAX_LOGIT_BIAS:
            raise ValueError(f"at most {MAX_LOGIT_BIAS} entries are allowed")
        for key, bias in value.items():
            if not key.isdigit() or int(key) >= INT32:
                raise ValueError(f"keys must be token ids (non-negative integers as strings), not {key!r}")
            if not -100 <= bias <= 100:
                raise ValueError(f"the bias of token {key} must be in [-100, 100], not {bias}")
        return value

    @property
    def stop_list(self) -> tuple[str, ...]:
        """`stop` as a tuple of non-empty strings."""
        if self.stop is None:
            return ()
        return tuple(s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s)
