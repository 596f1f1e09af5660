"""Turn a GenerationRequest into what the batcher needs, or refuse it before it reaches the batch.

A request that cannot fit the context or the whole KV cache is refused here: inside transformers'
manager, one request larger than the cache stops the loop for everybody.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.config import ModelEntry
from services.common.errors import ContextLengthExceededError, InvalidRequestError

from .kv_budget import KvBudget
from .loader import LoadedModel
from .output import ParserSpec
from .prompt import render_prompt
from .sampler import SamplingSpec
from .types import GenerationRequest

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
    spec = SamplingSpec(
        temperature=_pick(sampling.temperature, defaults.temperature),
        top_p=_pick(sampling.top_p, defaults.top_p),
        top_k=_pick(sampling.top_k, defaults.top_k),
        presence_penalty=_pick(sampling.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(sampling.frequency_penalty, defaults.frequency_penalty),
        seed=sampling.seed,
    )
    _validate(spec)
    return PreparedRequest(prompt_ids=prompt_ids, max_new_tokens=max_new, spec=spec, stop=sampling.stop)


def _pick(value, default):
    return default if value is None else value


def _validate(spec: SamplingSpec) -> None:
    # The gateway validates too; engines are also called directly (grpcurl), so they check again.
    checks = [
        ("temperature", 0.0 <= spec.temperature <= 2.0, "must be between 0 and 2"),
        ("top_p", 0.0 < spec.top_p <= 1.0, "must be in (0, 1]"),
        ("top_k", spec.top_k >= 0, "must be >= 0"),
        ("presence_penalty", -2.0 <= spec.presence_penalty <= 2.0, "must be between -2 and 2"),
        ("frequency_penalty", -2.0 <= spec.frequency_penalty <= 2.0, "must be between -2 and 2"),
    ]
    for name, ok, rule in checks:
        if not ok:
            raise InvalidRequestError(f"{name} {rule}", param=name)
