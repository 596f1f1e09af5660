"""Turn a GenerationRequest into what the batcher needs, or refuse it before it reaches the batch.

A request that cannot fit the context or the whole KV cache is refused here: inside transformers'
manager, one request larger than the cache stops the loop for everybody. A request with images (native
vision) has them decoded and encoded here (images.py), its prompt counted with their tokens, and is held to
the image batches' share of the memory instead of the paged cache (native.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from services.common.config import ModelEntry, SamplingDefaults
from services.common.errors import ContextLengthExceededError, InvalidRequestError
from services.common.generation import MAX_TOP_LOGPROBS, ResponseFormatType, SamplingParams
from services.common.multimodal import EncodedImage

from .images import encode_images, expand, refuse_images
from .kv_budget import KvBudget
from .loader import LoadedModel
from .output import ParserSpec
from .prompt import render_prompt, render_raw_prompt
from .sampling.constraint import Constraint
from .sampling.grammar import GrammarCompiler, GrammarSpec
from .sampling.spec import SamplingSpec
from .tools.constraints import tool_call_grammar
from .tools.validation import calls_tools, validate_tools
from .types import GenerationRequest


@dataclass(frozen=True)
class PreparedRequest:
    """A validated request: its prompt (templated, or raw), completion budget, sampling."""

    prompt_ids: list[int]
    max_new_tokens: int
    spec: SamplingSpec
    stop: tuple[str, ...]
    stop_token_ids: tuple[int, ...] = ()
    parse_tools: bool = False  # the request offers tools and lets the model call them: read calls from the answer
    # A grammar shapes the answer from the first token (no reasoning opened by the prompt): the output parser
    # must not start inside a reasoning even where the model's format would.
    constrained: bool = False
    images: tuple[EncodedImage, ...] = ()  # the prompt's images, in order (native vision)
    raw: bool = False  # a raw prompt: the output is all text (no reasoning split, no tool calls)

    @property
    def image_tokens(self) -> int:
        """Prompt tokens the vision encoder fills."""
        return sum(image.image_tokens for image in self.images)


@dataclass(frozen=True)
class Prompt:
    """A request's prompt as the model reads it: token ids (image tokens expanded) and the images."""

    ids: list[int]
    images: tuple[EncodedImage, ...] = ()


def build_prompt(
    request: GenerationRequest,
    loaded: LoadedModel,
    entry: ModelEntry,
    parser: ParserSpec = ParserSpec("none"),
    image_capacity: int = 0,
) -> Prompt:
    """The prompt of one request: its conversation through the chat template (tools validated, images encoded and
    expanded), or its raw prompt as given. The one place Generate (`prepare_request`) and CountTokens build a
    prompt, so their counts cannot differ. Needs no weights (`loaded.model` may be None). Worker thread."""
    if request.prompt is not None:
        return Prompt(render_raw_prompt(loaded.tokenizer, request, loaded.text_config.vocab_size, entry.name))
    validate_tools(request, parser.tools)
    if request.has_images and (loaded.family is None or image_capacity <= 0):
        refuse_images(request, entry)
    images = encode_images(request, loaded, entry, image_capacity) if request.has_images else []
    prompt_ids = render_prompt(loaded.tokenizer, request, parser)
    if images:
        prompt_ids = expand(prompt_ids, loaded, images)
    return Prompt(prompt_ids, tuple(images))


def prepare_request(
    request: GenerationRequest,
    loaded: LoadedModel,
    entry: ModelEntry,
    budget: KvBudget,
    parser: ParserSpec = ParserSpec("none"),
    grammars: GrammarCompiler | None = None,
    image_capacity: int = 0,
) -> PreparedRequest:
    """Template, count and validate one request, and compile its grammar (runs in a worker thread: tokenizing
    and compiling are CPU work). `image_capacity`: KV tokens of one image batch (0: the model takes no images).
    A raw prompt is admitted as a chat is; its output is parsed by no reasoning or tool format (`raw`), so a
    grammar shapes it from its first token."""
    prompt = build_prompt(request, loaded, entry, parser, image_capacity)
    prompt_ids, images = prompt.ids, prompt.images
    raw = request.prompt is not None
    if raw:
        parser = ParserSpec("none")
    where = "prompt" if raw else "messages"
    capacity = image_capacity if images else budget.capacity_tokens
    counted = f", {sum(i.image_tokens for i in images)} of them image tokens" if images else ""
    sampling, defaults = request.sampling, loaded.sampling.values  # resolved once at load (loader.py)
    limit = min(loaded.max_context, capacity)
    room = limit - len(prompt_ids)
    if sampling.max_tokens is not None:
        max_new = sampling.max_tokens
        if len(prompt_ids) + max_new > loaded.max_context:
            raise ContextLengthExceededError(
                f"This model's maximum context length is {loaded.max_context} tokens. However, you requested "
                f"{len(prompt_ids) + max_new} tokens ({len(prompt_ids)} in the {where}{counted}, {max_new} in the "
                "completion). "
                f"Please reduce the length of the {where} or completion.",
                param=where,
            )
    else:
        # No max_tokens: the models.yaml/checkpoint default, else all the room the context and the whole KV
        # cache leave (vLLM: context - prompt). A reasoning model answers after it thinks, so a smaller
        # built-in default would cut answers off. The cache is not reserved up front: requests that outgrow
        # it together are preempted and resumed by the batcher (batcher.py), costing time, never a request.
        max_new = min(defaults.max_tokens or room, room)
    if len(prompt_ids) + max_new > capacity or max_new < 1:
        raise ContextLengthExceededError(
            f"This request needs {len(prompt_ids) + max(max_new, 1)} tokens ({len(prompt_ids)} in the {where}"
            f"{counted}, {max(max_new, 1)} in the completion) but the model's context and "
            f"{'image batch memory' if images else 'KV cache'} budget allow {limit}. "
            f"Please reduce the length of the {where} or completion.",
            param=where,
        )
    spec = sampling_spec(sampling, defaults)
    _token_parameters(spec, sampling, loaded, max_new)
    spec.constraint = _constraint(request, parser, grammars, prompt_ids)
    if spec.constraint is not None and (spec.banned_ids or spec.min_tokens):
        raise InvalidRequestError(
            "ignore_eos and min_tokens cannot be combined with a response_format or tool_choice "
            "that constrains the output: the grammar decides where it ends",
            param="ignore_eos" if spec.banned_ids else "min_tokens",
        )
    return PreparedRequest(
        prompt_ids=prompt_ids,
        max_new_tokens=max_new,
        spec=spec,
        stop=sampling.stop,
        stop_token_ids=sampling.stop_token_ids,
        parse_tools=calls_tools(request),
        constrained=spec.constraint is not None and spec.constraint.masks,
        images=images,
        raw=raw,
    )


# Every parameter that has a model default, except max_tokens (the completion budget, decided above).
_SAMPLED = tuple(name for name in SamplingDefaults.model_fields if name != "max_tokens")


def sampling_spec(sampling: SamplingParams, defaults: SamplingDefaults) -> SamplingSpec:
    """The request's parameters over the model's defaults, validated against the one definition of their
    bounds (`SamplingDefaults`, which also validates models.yaml): engines are called directly too (grpcurl),
    so they check what the gateway already checked."""
    values = {
        name: getattr(defaults, name) if getattr(sampling, name) is None else getattr(sampling, name)
        for name in _SAMPLED
    }
    try:
        SamplingDefaults.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0])
        raise InvalidRequestError(f"{name}: {error['msg']}", param=name) from None
    return SamplingSpec(**values, seed=sampling.seed)


def _token_parameters(spec: SamplingSpec, sampling: SamplingParams, loaded: LoadedModel, max_new: int) -> None:
    """The parameters that name token ids or counts: checked against this model's vocabulary and the completion
    budget, then set on the spec (the ends min_tokens protects, the ids ignore_eos bans)."""
    vocab = loaded.text_config.vocab_size
    for name, ids in (("logit_bias", list(sampling.logit_bias)), ("stop_token_ids", list(sampling.stop_token_ids))):
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise InvalidRequestError(
                f"{name}: token id {bad[0]} is not in this model's vocabulary (0..{vocab - 1})", param=name
            )
    bias = [v for v in sampling.logit_bias.values() if not -100.0 <= v <= 100.0]
    if bias:
        raise InvalidRequestError(f"logit_bias: {bias[0]} is outside [-100, 100]", param="logit_bias")
    if sampling.top_logprobs is not None and not 0 <= sampling.top_logprobs <= MAX_TOP_LOGPROBS:
        raise InvalidRequestError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", param="top_logprobs")
    min_tokens = sampling.min_tokens or 0
    if min_tokens > max_new:
        raise InvalidRequestError(
            f"min_tokens ({min_tokens}) exceeds the completion budget ({max_new} tokens)", param="min_tokens"
        )
    spec.logit_bias = dict(sampling.logit_bias)
    spec.min_tokens = min_tokens
    spec.end_ids = tuple(dict.fromkeys([*loaded.eos_token_ids, *sampling.stop_token_ids]))
    spec.banned_ids = tuple(loaded.eos_token_ids) if sampling.ignore_eos else ()
    spec.top_logprobs = sampling.top_logprobs


def grammar_spec(request: GenerationRequest, parser: ParserSpec) -> GrammarSpec | None:
    """The grammar a request's output must match, if any: its response_format, or its tool_choice when that
    is `required` or a named function (a call in the model's own format, arguments by the function's schema)."""
    fmt = request.response_format
    tools = tool_call_grammar(parser, request.tools, request.tool_choice, request.parallel_tool_calls)
    if tools is not None and fmt.type is not ResponseFormatType.TEXT:
        raise InvalidRequestError(
            "response_format cannot be combined with a tool_choice that forces a tool call", param="response_format"
        )
    if fmt.type is ResponseFormatType.JSON_OBJECT:
        return GrammarSpec("json_object")
    if fmt.type is ResponseFormatType.JSON_SCHEMA:
        if not fmt.schema.strip():
            raise InvalidRequestError("response_format json_schema needs a schema", param="response_format")
        return GrammarSpec("json_schema", fmt.schema)
    return tools


def _constraint(
    request: GenerationRequest, parser: ParserSpec, grammars: GrammarCompiler | None, prompt_ids: list[int]
) -> Constraint | None:
    """The request's compiled grammar, gated so that a reasoning model's reasoning stays free: the grammar
    starts after the reasoning's end marker when the prompt opened a reasoning (DeepSeek-R1 templates) or the
    model opens one with its first token (Ministral-3, Qwen3); otherwise it shapes the answer from the start."""
    spec = grammar_spec(request, parser)
    if spec is None:
        return None
    if grammars is None:
        raise InvalidRequestError("this engine cannot constrain output", param=spec.param)
    matcher = grammars.compile(spec).matcher()
    if parser.reasoning == "none":
        return Constraint.for_model(matcher, None, None, False, spec)
    start, end = (m.token_id for m in parser.markers)
    opened = _last_index(prompt_ids, start) > _last_index(prompt_ids, end)
    return Constraint.for_model(matcher, start, end, starts_in_reasoning=opened, spec=spec)


def _last_index(ids: list[int], token: int) -> int:
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == token:
            return i
    return -1
