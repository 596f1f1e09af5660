"""OpenAI's legacy Completions request (`POST /v1/completions`) and the documented shape of its answer.

The body is OpenAI's (vLLM's /v1/completions is the reference for behaviour): a raw `prompt` (a string, a list of
strings, a list of token ids, or a list of lists of token ids; each prompt of a list is its own generation with its
own `n` choices), `suffix` for fill-in-the-middle, `echo`, and the legacy integer `logprobs`. The sampling fields
(and vLLM's extras) are every protocol's (sampling.py). Values OpenAI or vLLM would refuse are a 400 naming the
field; so are the ones this server cannot honour, rather than being silently ignored:
- `best_of` other than `n`: ranking candidates is not done here (vLLM's V1 engine does not either);
- `echo` with token-id prompts (the gateway has no tokenizer to write them back as text), and `echo` with
  `logprobs` (that needs the prompt's logprobs, which the engine does not compute).
`logprobs` goes up to 20 alternatives per token as vLLM's does (OpenAI's legacy API stops at 5).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from services.common.config import RequestLimits
from services.common.errors import InvalidRequestError
from services.common.generation import MAX_TOP_LOGPROBS

from ..limits import check_chat_limits, check_request_json
from .chat import StreamOptions
from .sampling import UINT32, SamplingFields, TokenId, min_tokens_within

DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for this endpoint

TokenIds = Annotated[list[TokenId], Field(min_length=1)]
PromptItem = str | tuple[int, ...]  # one prompt of a batch: its text, or its token ids
_PROMPT_FORMS = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids"


class CompletionRequest(SamplingFields):
    """`POST /v1/completions` body. (Fields are declared in the order their checks need.)"""

    model: str = Field(min_length=1)
    prompt: str | list[str] | TokenIds | list[TokenIds] = Field(
        description="A prompt (text or token ids) or a batch of them: each prompt of a list gets its own `n` "
        "choices, choice `index` = prompt index x n + choice. prompts x n is at most `gateway.max_n`."
    )
    suffix: str | None = Field(
        None,
        description="Fill-in-the-middle: the text after the completion (models with "
        "FIM tokens only, e.g. Qwen2.5-Coder, StarCoder).",
    )
    max_tokens: int | None = Field(
        DEFAULT_MAX_TOKENS,
        ge=1,
        lt=UINT32,
        description="At most gateway.limits.max_completion_tokens; null: as many as the context allows.",
    )
    min_tokens: int | None = Field(
        None,
        ge=0,
        lt=UINT32,
        description="vLLM extra: no end of sequence before this many tokens (at most max_tokens).",
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = Field(None, ge=1, description="Choices per prompt.")
    best_of: int | None = Field(None, ge=1, description="Only equal to n (every candidate is returned).")
    logprobs: int | None = Field(
        None,
        ge=0,
        le=MAX_TOP_LOGPROBS,
        description="Return each token's logprob and this many alternatives (up to 20, as vLLM; OpenAI allows 5).",
    )
    echo: bool = Field(False, description="Put the prompt before the completion (text prompts, without logprobs).")
    user: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _within_limits_and_carriable(cls, data):
        check_request_json(data, _check_limits)
        return data

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt_form(cls, value):
        # The union's own errors would list every form it tried; say which forms there are instead.
        if isinstance(value, str):
            return value
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        kinds = {_kind(item) for item in value} if isinstance(value, list) else {"other"}
        nested = kinds != {"list"} or all(_kind(i) == "int" for item in value for i in item)
        if len(kinds) > 1 or not kinds <= {"str", "int", "list"} or not nested:
            raise ValueError(_PROMPT_FORMS)
        return value

    @field_validator("min_tokens")
    @classmethod
    def _min_tokens_within_max(cls, value, info: ValidationInfo):
        return min_tokens_within(value, info.data.get("max_tokens"))

    @field_validator("best_of")
    @classmethod
    def _best_of_is_n(cls, value, info: ValidationInfo):
        n = info.data.get("n") or 1
        if value is not None and value != n:
            raise ValueError(
                f"best_of ({value}) must equal n ({n}) or be left out: this server returns every "
                "completion it generates and does not rank candidates"
            )
        return value

    @field_validator("echo")
    @classmethod
    def _echo_what_can_be_echoed(cls, value, info: ValidationInfo):
        if not value:
            return value
        if info.data.get("logprobs") is not None:
            raise ValueError(
                "echo with logprobs needs the prompt's logprobs, which this server does not compute; send one of them"
            )
        if any(not isinstance(p, str) for p in _as_list(info.data.get("prompt"))):
            raise ValueError("echo needs text prompts: token-id prompts cannot be written back as text here")
        return value

    @property
    def prompts(self) -> list[PromptItem]:
        """Each prompt of the batch, in order: its text, or its token ids."""
        return [p if isinstance(p, str) else tuple(p) for p in _as_list(self.prompt)]


def _as_list(prompt) -> list:
    """The prompts of a validated `prompt` (a lone string or a lone list of token ids is one prompt)."""
    if prompt is None:
        return []
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
        return [prompt]
    return list(prompt)


def _kind(item: object) -> str:
    if isinstance(item, bool):  # a bool is an int to Python, not a token id
        return "bool"
    return next((name for name, t in (("str", str), ("int", int), ("list", list)) if isinstance(item, t)), "other")


def _check_limits(body: dict, limits: RequestLimits) -> None:
    check_chat_limits({"max_tokens": body.get("max_tokens")}, limits)
    _check_prompt_size(body.get("prompt"), limits.max_text_chars)


def _check_prompt_size(prompt: object, max_chars: int) -> None:
    """A 400 naming `prompt` when its text (a token id counts as one character) passes
    gateway.limits.max_text_chars, as a chat request's messages would."""
    items = prompt if isinstance(prompt, list) else [prompt]
    size = sum(len(item) if isinstance(item, str | list) else 1 for item in items)
    if size > max_chars:
        raise InvalidRequestError(
            f"Invalid 'prompt': {size} characters (or token ids) is more than this server "
            f"accepts (at most {max_chars}; gateway.limits.max_text_chars).",
            param="prompt",
            code="text_too_long",
        )


class CompletionLogprobs(BaseModel):
    """`choices[].logprobs` (with `logprobs` set): per answer token, its text, logprob, alternatives (the token
    itself among them: up to logprobs + 1 entries) and where it starts in the choice's text."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    """One completion: of prompt `index // n`, its choice `index % n`."""

    index: int
    text: str = Field(description="The completion (after the prompt, with echo).")
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length"] = Field(
        description="`stop` (end of sequence or a stop sequence) or `length`."
    )


class CompletionUsage(BaseModel):
    """Token counts: every prompt's tokens, and the completion tokens of every choice."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    """A non-streamed answer (`object: text_completion`); a stream's chunks have the same shape, one choice's
    new text each."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: CompletionUsage | None = None
