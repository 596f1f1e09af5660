"""Turn a GenerationRequest into what the batcher needs, or refuse it before it reaches the batch.

A request that cannot fit the context or the whole KV cache is refused here: inside transformers'
manager, one request larger than the cache stops the loop for everybody.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from services.common.config import ModelEntry, SamplingDefaults
from services.common.errors import ContextLengthExceededError, InvalidRequestError

from .kv_budget import KvBudget
from .loader import LoadedModel
from .output import ParserSpec
from .prompt import render_prompt
from .sampling.spec import SamplingSpec
from .types import GenerationRequest, SamplingRequest

@dataclass(frozen=True)
class PreparedRequest:
    """A validated request: templated prompt, completion budget, sampling."""

    prompt_ids: list[int]
    max_new_tokens: int
    spec: SamplingSpec
    stop: tuple[str, ...]


def prepare_request(request: GenerationRequest, loaded: LoadedModel, entry: ModelEntry, budget: KvBudget,
                    parser: ParserSpec = ParserSpec("none")) -> PreparedRequest:  # fmt: skip
    """Template, count and validate one request (runs in a worker thread: tokenizing is CPU work)."""
    prompt_ids = render_prompt(loaded.tokenizer, request, parser)
    sampling, defaults = request.sampling, loaded.sampling.values  # resolved once at load (loader.py)
    limit = min(loaded.max_context, budget.capacity_tokens)
    room = limit - len(prompt_ids)
    if sampling.max_tokens is not None:
        max_new = sampling.max_tokens
        if len(prompt_ids) + max_new > loaded.max_context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {loaded.max_context} tokens. However, you requested "
                f"{len(prompt_ids) + max_new} tokens ({len(prompt_ids)} in the messages, {max_new} in the completion). "
                "Please reduce the length of the messages or completion.",
                param="messages",
            )
    else:
        # No max_tokens: the models.yaml/checkpoint default, else all the room the context and the whole KV
        # cache leave (vLLM: context - prompt). A reasoning model answers after it thinks, so a smaller
        # built-in default would cut answers off. The cache is not reserved up front: requests that outgrow
        # it together are preempted and resumed by the batcher (batcher.py), costing time, never a request.
        max_new = min(defaults.max_tokens or room, room)
    if len(prompt_ids) + max_new > budget.capacity_tokens or max_new < 1:
        raise ContextLengthExceededError(
            f"This request needs {len(prompt_ids) + max(max_new, 1)} tokens ({len(prompt_ids)} in the messages, "
            f"{max(max_new, 1)} in the completion) but the model's context and KV cache budget allow {limit}. "
            "Please reduce the length of the messages or completion.",
            param="messages",
        )
    return PreparedRequest(prompt_ids=prompt_ids, max_new_tokens=max_new, spec=sampling_spec(sampling, defaults),
                           stop=sampling.stop)  # fmt: skip


# Every parameter that has a model default, except max_tokens (the completion budget, decided above).
_SAMPLED = tuple(name for name in SamplingDefaults.model_fields if name != "max_tokens")


def sampling_spec(sampling: SamplingRequest, defaults: SamplingDefaults) -> SamplingSpec:
    """The request's parameters over the model's defaults, validated against the one definition of their
    bounds (`SamplingDefaults`, which also validates models.yaml): engines are called directly too (grpcurl),
    so they check what the gateway already checked."""
    values = {name: getattr(defaults, name) if getattr(sampling, name) is None else getattr(sampling, name)
              for name in _SAMPLED}  # fmt: skip
    try:
        SamplingDefaults.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        raise InvalidRequestError(f"{name}: {error['msg']}", param=name) from None
    return SamplingSpec(**values, seed=sampling.seed)
