"""Constrained decoding: grammars compiled at admission, token masks applied inside the batch step.

Built on llguidance (see docs/benchmarks.md, "Grammar library: llguidance vs xgrammar", for why it and not
xgrammar). Three kinds of grammar arrive as a `GrammarSpec`: `json_object` (any JSON object),
`json_schema` (a JSON Schema) and `lark` (llguidance's Lark dialect, which the tool-call grammars use: it
can name special tokens, `<|im_end|>` or `<[9]>`, and embed schemas with `%json {...}`).

Threads: `GrammarCompiler.compile` runs on worker threads (admission), so it is locked around its cache;
llguidance drops the GIL while it builds a grammar. A `GrammarMatcher` belongs to one request and is only
touched by the engine's generation thread, so it needs no lock.

Whitespace: between two JSON tokens every JSON grammar allows at most one line break and an indentation of
up to `MAX_JSON_INDENT` spaces (`JSON_WHITESPACE`), so json.dumps' layout, the compact one and a pretty-printed
one all pass. llguidance's default allows any run of whitespace there, which weak models
(random-weight, tiny) fill with newlines until max_tokens; no whitespace at all (the layout was fixed to
json.dumps' before) masks the newline and indentation a small instruct model wants and derails it (SmolLM2
under instructor's JSON mode). The library matches the pattern at most once per gap (llguidance >= 1.8), so
the bound holds for the whole gap. Tool-call grammars embed `JSON_FORMAT_OPTIONS` as `"x-guidance"`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import llguidance
import llguidance.hf
import torch

from services.common.errors import InvalidRequestError

logger = logging.getLogger(__name__)

# 2-space indents 4 levels down, 4-space ones 2 levels: what a small model writes, and little room to idle in. Each
# kind of whitespace allowed (tabs, CR) and each column more lets a weak model spend more tokens per gap; measured
# with random logits on a 4-field schema, json.dumps' layout takes ~36 tokens, this ~50, 16 columns with tabs ~68.
MAX_JSON_INDENT = 8
# Spaces alone, or one line break and an indentation.
JSON_WHITESPACE = rf"\x20{{1,{MAX_JSON_INDENT}}}|\x0A\x20{{0,{MAX_JSON_INDENT}}}"
# llguidance's JSON compile options (its `x-guidance` keys): plain separators, the bounded whitespace around them.
JSON_FORMAT_OPTIONS = {"whitespace_pattern": JSON_WHITESPACE, "item_separator": ",", "key_separator": ":"}
# An error message from the library can carry a dump of its parser state; the client needs the first lines.
MAX_ERROR_CHARS = 600

GrammarKind = Literal["json_object", "json_schema", "lark"]
_KIND_NAMES = {"json_object": "JSON object grammar", "json_schema": "JSON schema", "lark": "grammar"}


@dataclass(frozen=True)
class GrammarSpec:
    """What a request wants its output to match; the cache key (with `source` normalized, see `_cache_key`)."""

    kind: GrammarKind
    source: str = ""  # JSON Schema text for json_schema; grammar text (the library's Lark dialect) for lark
    param: str = "response_format"  # the request field a compile error names


@dataclass
class CompileStats:
    """Counts and seconds for the bench and metrics (a snapshot: `GrammarCompiler.stats()` copies it)."""

    cold: int = 0  # grammars built (cache misses that compiled)
    cached: int = 0  # cache hits
    failed: int = 0  # specs rejected with InvalidRequestError
    cold_seconds: float = 0.0
    cached_seconds: float = 0.0


class CompiledGrammar:
    """A grammar ready to constrain requests: a pristine matcher that each request copies."""

    def __init__(self, template: llguidance.LLMatcher, vocab_size: int, executor: llguidance.LLExecutor) -> None:
        self._template = template  # never advanced; copying it is ~30x cheaper than building a matcher
        self._vocab_size = vocab_size
        self._executor = executor

    def matcher(self) -> GrammarMatcher:
        """Fresh per-request state."""
        return GrammarMatcher(self._template.deep_copy(), self._vocab_size, self._executor)


class GrammarViolationError(RuntimeError):
    """A token the grammar forbids was accepted: the mask was not applied to that row (an engine bug)."""


class GrammarMatcher:
    """One request's position in its grammar. Owned by the generation thread."""

    def __init__(self, matcher: llguidance.LLMatcher, vocab_size: int, executor: llguidance.LLExecutor) -> None:
        self._matcher = matcher
        self.vocab_size = vocab_size  # the tokenizer's vocabulary: the width of this matcher's masks
        self.executor = executor

    def accept(self, token_id: int) -> None:
        """Advance by one sampled token (an EOS the grammar allows is accepted too)."""
        if not self._matcher.consume_token(token_id):
            raise GrammarViolationError(
                f"token {token_id} violates the grammar: {self._matcher.get_error()[:MAX_ERROR_CHARS]}"
            )

    @property
    def is_finished(self) -> bool:
        """The grammar is complete and only end-of-sequence remains (or it was accepted)."""
        return self._matcher.is_stopped() and not self._matcher.is_error()

    @property
    def ll_matcher(self) -> llguidance.LLMatcher:
        """The library's matcher, for the batched mask fill."""
        return self._matcher


class GrammarCompiler:
    """Built once per model load (tokenizer-info construction is the slow part: ~0.5 s for a 49k vocabulary)."""

    def __init__(self, tokenizer, vocab_size: int, eos_token_ids: Sequence[int], cache_size: int = 256) -> None:
        eos = list(eos_token_ids) or [tokenizer.eos_token_id]
        # The tokenizer's own vocabulary, not the model's (possibly padded) one: ids past it have no bytes and
        # `apply_grammar_masks` forbids them outright.
        self._ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, eos_token=eos)
        self.model_vocab_size = vocab_size
        self.eos_token_ids = tuple(eos)
        self._executor = llguidance.LLExecutor()
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()  # guards _cache and _stats; compiling itself happens outside it
        self._stats = CompileStats()

    @property
    def vocab_size(self) -> int:
        """The tokenizer's vocabulary size as the library sees it (the width of the masks it computes)."""
        return self._ll_tokenizer.vocab_size

    def stats(self) -> CompileStats:
        with self._lock:
            return CompileStats(**vars(self._stats))

    def compile(self, spec: GrammarSpec) -> CompiledGrammar:
        """The compiled grammar for `spec`, from the LRU cache when possible.

        Raises InvalidRequestError naming the problem (bad JSON, invalid or unsupported schema keyword,
        grammar syntax error) with `param=spec.param`.
        """
        start = time.perf_counter()
        try:
            key = _cache_key(spec)
        except InvalidRequestError:
            with self._lock:
                self._stats.failed += 1
            raise
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                self._stats.cached += 1
                self._stats.cached_seconds += time.perf_counter() - start
                return hit
        try:
            compiled = self._build(spec, key)
        except InvalidRequestError:
            with self._lock:
                self._stats.failed += 1
            raise
        with self._lock:
            # Two threads may have built the same spec at once; keep the first so callers share one object.
            compiled = self._cache.setdefault(key, compiled)
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
            self._stats.cold += 1
            self._stats.cold_seconds += time.perf_counter() - start
        return compiled

    def _build(self, spec: GrammarSpec, key: tuple[str, str]) -> CompiledGrammar:
        what = _KIND_NAMES[spec.kind]
        if spec.kind == "lark":
            grammar = llguidance.LLMatcher.grammar_from_lark(spec.source)
        else:
            schema = key[1]  # already parsed and checked by _cache_key
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_FORMAT_OPTIONS)
        # Building the matcher is what compiles (and validates) the grammar; it reports errors, never raises.
        template = llguidance.LLMatcher(self._ll_tokenizer, grammar, log_level=0)
        if template.is_error():
            raise InvalidRequestError(
                f"Unsupported or invalid {what}: {_short(template.get_error())}", param=spec.param
            )
        for warning in template.get_grammar_warnings():
            logger.warning("grammar warning for %s: %s", spec.param, warning)
        return CompiledGrammar(template, self.vocab_size, self._executor)


def _cache_key(spec: GrammarSpec) -> tuple[str, str]:
    """(kind, normalized source); a schema is re-serialized compactly so formatting does not split the cache.

    Keys keep their order (no sort_keys): property order decides the order the output writes them in.
    """
    if spec.kind == "lark":
        return ("lark", spec.source)
    if spec.kind == "json_object":
        return ("json_schema", '{"type":"object"}')
    if spec.kind != "json_schema":
        raise InvalidRequestError(f"Unknown grammar kind {spec.kind!r}", param=spec.param)
    try:
        schema = json.loads(spec.source)
    except ValueError as exc:
        raise InvalidRequestError(f"The JSON schema is not valid JSON: {exc}", param=spec.param) from exc
    if not isinstance(schema, (dict, bool)):
        raise InvalidRequestError(f"The JSON schema must be an object, got {type(schema).__name__}", param=spec.param)
    return ("json_schema", json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def _short(message: str) -> str:
    message = message.strip()
    return message if len(message) <= MAX_ERROR_CHARS else message[:MAX_ERROR_CHARS] + "..."


_BIT_SHIFTS = torch.arange(32, dtype=torch.int32)


def fill_bitmask(rows: Sequence[GrammarMatcher], bitmask: torch.Tensor, *, parallel: bool) -> None:
    """Write each matcher's allowed-token bits into its row of `bitmask` (int32 [len(rows), words], CPU).

    `parallel` uses llguidance's thread pool (one call for all rows). On a CPU-only machine that is slower:
    torch's OpenMP threads keep spinning on the same cores between ops, and the pool's threads wait for them
    (measured on the 2-core VM, 8 rows of a 49k vocabulary: 0.5 ms a step on the calling thread, 10-38 ms
    mean with the pool; docs/benchmarks.md). So the pool is for when the model runs on an accelerator.
    """
    stride = bitmask.shape[1] * 4
    if parallel and len(rows) > 1:
        pairs = [(matcher.ll_matcher, i) for i, matcher in enumerate(rows)]
        rows[0].executor.unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), stride, len(rows))
    else:
        for i, matcher in enumerate(rows):
            matcher.ll_matcher.unsafe_compute_mask_ptr(bitmask.data_ptr() + i * stride, stride)


def apply_grammar_masks(logits: torch.Tensor, rows: Sequence[tuple[int, GrammarMatcher]]) -> None:
    """Set -inf, in place on `logits` [batch, vocab], on every token each listed row's grammar forbids now.

    The library fills all the rows' bitmasks (in parallel when the logits live on an accelerator, see
    `fill_bitmask`), and the bits are unpacked on the logits' device. Ids at or past the tokenizer's vocabulary
    (padded embeddings) are always forbidden on these rows; once a grammar is complete the library's mask
    allows only the EOS ids. Rows not listed are untouched.
    """
    if not rows:
        return
    matchers = [matcher for _, matcher in rows]
    vocab = matchers[0].vocab_size
    words = (vocab + 31) // 32
    bitmask = torch.zeros((len(rows), words), dtype=torch.int32)
    fill_bitmask(matchers, bitmask, parallel=logits.device.type != "cpu")
    bits = bitmask.to(logits.device, non_blocking=True).unsqueeze(-1) >> _BIT_SHIFTS.to(logits.device)
    allowed = (bits & 1).bool().reshape(len(rows), words * 32)[:, :vocab]
    width = logits.shape[-1]
    if width > vocab:
        allowed = torch.nn.functional.pad(allowed, (0, width - vocab), value=False)
    allowed = allowed[:, :width]
    index = torch.tensor([row for row, _ in rows], device=logits.device)
    logits[index] = logits[index].masked_fill(~allowed, float("-inf"))
