"""Our grammars inside vLLM's sampler: a vLLM logits processor that applies the same masks as our own pipeline.

Why not vLLM's own structured outputs: it compiles a request's grammar against vLLM's tokenizer (which our
backend does not start: prompts and outputs are token ids, vllm_source.py) and gates it with vLLM's reasoning
parsers, configured once per engine; ours gate each request by its model's reasoning markers and by whether its
prompt opened a reasoning (sampling/constraint.py), and mask tool-call grammars in the model's own call format
(tools/constraints.py). Running our `Constraint` here keeps both backends choosing among the same tokens, so a
greedy constrained answer is the same text on both.

This class runs in vLLM's worker process (vLLM imports it by name, vllm_source.LOGITS_PROCESSOR); each constrained
request carries its grammar in `SamplingParams.extra_args[EXTRA_KEY]` (kind, source, reasoning markers, the
tokenizer to compile against), and the worker compiles it with our GrammarCompiler (its cache keeps repeated
schemas cheap). Admission has already compiled the same grammar in the engine process, so a bad schema is a
400 there and never reaches vLLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from vllm.v1.sample.logits_processor import BatchUpdate, LogitsProcessor
from vllm.v1.sample.logits_processor.builtin import process_dict_updates

from services.common.tokenizers import load_tokenizer

from .sampling.constraint import Constraint
from .sampling.grammar import GrammarCompiler, GrammarSpec
from .sampling.pipeline import mask_constrained

EXTRA_KEY = "proxyvision_grammar"


def grammar_args(
    constraint: Constraint, tokenizer_source: str, revision: str | None, vocab_size: int, eos_token_ids: list[int]
) -> dict:
    """What the worker needs to rebuild `constraint` (plain values: they cross vLLM's MessagePack transport)."""
    spec: GrammarSpec = constraint.spec  # type: ignore[assignment]
    return {
        EXTRA_KEY: {
            "kind": spec.kind,
            "source": spec.source,
            "param": spec.param,
            "think_start": constraint.think_start,
            "think_end": constraint.think_end,
            "state": constraint.state,
            "tokenizer": tokenizer_source,
            "revision": revision,
            "vocab_size": vocab_size,
            "eos": list(eos_token_ids),
        }
    }


@dataclass
class _Row:
    constraint: Constraint
    output: list[int]  # vLLM's running list of this request's output tokens (a live reference)
    seen: int = 0  # how many of them the constraint has observed


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks the logits of every request whose extra_args carry a grammar; other rows are untouched."""

    def __init__(self, vllm_config, device: torch.device, is_pin_memory: bool) -> None:
        self._rows: dict[int, _Row] = {}  # persistent-batch index -> its constraint
        self._compilers: dict[str, GrammarCompiler] = {}  # one per tokenizer (one model per engine in practice)

    def is_argmax_invariant(self) -> bool:
        """A grammar changes which token greedy decoding picks."""
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        """Track the batch's constrained requests, and advance each constraint over its new output tokens."""
        process_dict_updates(self._rows, batch_update, self._new_row)
        for row in self._rows.values():
            while row.seen < len(row.output):
                row.constraint.observe(row.output[row.seen])
                row.seen += 1

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        """-inf on every token a constrained row's grammar forbids now (in place)."""
        constrained = [(i, row.constraint) for i, row in self._rows.items() if row.constraint.masks]
        if constrained:
            mask_constrained(logits, constrained)
        return logits

    def _new_row(self, params, _prompt: list[int] | None, output: list[int]) -> _Row | None:
        args = (params.extra_args or {}).get(EXTRA_KEY)
        if args is None:
            return None
        spec = GrammarSpec(args["kind"], args["source"], args["param"])
        matcher = self._compiler(args).compile(spec).matcher()
        constraint = Constraint(matcher, args["think_start"], args["think_end"], args["state"], spec)
        return _Row(constraint, output)

    def _compiler(self, args: dict) -> GrammarCompiler:
        key = args["tokenizer"]
        if key not in self._compilers:
            tokenizer = load_tokenizer(key, revision=args["revision"])
            self._compilers[key] = GrammarCompiler(tokenizer, args["vocab_size"], args["eos"])
        return self._compilers[key]
