"""One request's stream: manager outputs in, reasoning/answer deltas and a final event out.

The manager delivers the cumulative token list of a request on every step (on the event loop, through
`on_output`); this class feeds the new tokens to the request's output pipeline (detokenizer, parser, stop
strings) and decides the finish reason. A cancelled request gets no final output from the manager, so the
engine ends the stream itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

from services.common.generation import Finished, FinishReason, GenerationEvent, TextDelta, TokenLogprob, ToolCallDelta

from .admission import PreparedRequest
from .logprobs import LogprobFormatter
from .output import OutputPipeline, ParserSpec
from .output.pipeline import merge_deltas


class RequestStream:
    """Converts GenerationOutputs of one request into GenerationEvents."""

    def __init__(
        self,
        key: str,
        prepared: PreparedRequest,
        tokenizer,
        eos_token_ids: list[int],
        parser: ParserSpec = ParserSpec("none"),
        logprobs: LogprobFormatter | None = None,
    ) -> None:
        self.key = key
        self.engine_finished = False
        self._prepared = prepared
        self._eos = set(eos_token_ids)
        self._stop_ids = set(prepared.stop_token_ids)
        # With top_logprobs: the sampler's records (one per generated token, in order) and the formatted ones of
        # answer tokens whose text has not been sent yet (held back by the detokenizer or a stop-string prefix).
        self._records = prepared.spec.sampled if prepared.spec.top_logprobs is not None else None
        self._formatter = logprobs or (LogprobFormatter(tokenizer) if self._records is not None else None)
        self._pending: list[TokenLogprob] = []
        self._output = OutputPipeline.for_request(
            parser,
            tokenizer,
            prepared.prompt_ids,
            prepared.stop,
            parse_tools=prepared.parse_tools,
            constrained=prepared.constrained,
            raw=prepared.raw,
        )
        self._outputs: asyncio.Queue = asyncio.Queue()
        self._seen = 0

    def on_output(self, output) -> None:
        """Called on the event loop by the manager's output router."""
        self._outputs.put_nowait(output)

    def fail(self, message: str) -> None:
        """End the stream with an error (the batching loop died)."""
        self._outputs.put_nowait(message)

    def abort(self, error: Exception) -> None:
        """Make `events()` raise `error` (the engine is shutting down): the call ends with its status."""
        self._outputs.put_nowait(error)

    def _latest(self, output):
        """Outputs carry the cumulative token list: when the reader fell behind, the newest one says it all
        (one delta instead of several: fewer messages to send exactly when the engine is busiest)."""
        while not self._outputs.empty() and not isinstance(output, (str, Exception)):
            output = self._outputs.get_nowait()
        return output

    def _finished(self, reason: FinishReason, error: str = "") -> Finished:
        if reason in (FinishReason.STOP, FinishReason.LENGTH) and self._output.made_tool_calls:
            reason = FinishReason.TOOL_CALLS  # as vLLM: a call was made, even if max_tokens cut it
        stop = self._output.stop_sequence if reason is FinishReason.STOP else ""
        return Finished(reason, len(self._prepared.prompt_ids), self._seen, error, self._output.reasoning_tokens, stop)

    def _push(self, token: int) -> list:
        """One token through the output pipeline, noting its logprob record when it is an answer token."""
        record = self._records.popleft() if self._records else None
        reasoning_before = self._output.reasoning_tokens
        deltas = self._output.push(token)
        if self._output.made_tool_calls or any(isinstance(d, ToolCallDelta) for d in deltas):
            self._pending.clear()  # logprobs cover the answer's content, as OpenAI's do, not tool calls
        elif record is not None and self._output.reasoning_tokens == reasoning_before and token not in self._eos:
            self._pending.append(self._formatter.format(record))
        return deltas

    def _with_logprobs(self, deltas: list) -> list:
        """Put the logprobs of the tokens whose text went out on this step's last answer delta."""
        if not self._pending:
            return deltas
        for i in range(len(deltas) - 1, -1, -1):
            if isinstance(deltas[i], TextDelta):
                deltas[i] = dataclasses.replace(deltas[i], logprobs=tuple(self._pending))
                self._pending = []
                break
        return deltas

    async def events(self) -> AsyncIterator[GenerationEvent]:
        """Yield deltas until the request finishes; the last event is always `Finished`."""
        while True:
            output = self._latest(await self._outputs.get())
            if isinstance(output, Exception):
                raise output
            if isinstance(output, str):
                self.engine_finished = True
                yield self._finished(FinishReason.ERROR, output)
                return
            tokens = output.generated_tokens
            new = tokens[self._seen :]
            self._seen = len(tokens)
            if output.is_finished():
                self.engine_finished = True
            if output.error:
                yield self._finished(FinishReason.ERROR, output.error)
                return
            # One token at a time, even when several arrived together: the text must not depend on how
            # the engine's steps were grouped into messages (byte-level tokens can be invalid UTF-8).
            deltas, stop_token = [], False
            for token in new:
                if token in self._stop_ids:  # a stop_token_ids token ends the answer as EOS does, unshown
                    stop_token = True
                    break
                deltas += self._push(token)
            if self.engine_finished or stop_token:
                deltas += self._output.finish()
            for delta in self._with_logprobs(merge_deltas(deltas)):
                yield delta
            if self._pending and (self.engine_finished or stop_token) and not self._output.stopped:
                # The last tokens showed no text (a special token): their logprobs still go out, on an empty delta.
                yield TextDelta("", tuple(self._pending))
                self._pending = []
            if self._output.stopped or stop_token:
                yield self._finished(FinishReason.STOP)
                return
            if self.engine_finished:
                reason = FinishReason.STOP if tokens and tokens[-1] in self._eos else FinishReason.LENGTH
                yield self._finished(reason)
                return
