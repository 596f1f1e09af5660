"""One request's stream: manager outputs in, reasoning/answer deltas and a final event out.

The manager delivers the cumulative token list of a request on every step (on the event loop, through
`on_output`); this class feeds the new tokens to the request's output pipeline (detokenizer, parser, stop
strings) and decides the finish reason. A cancelled request gets no final output from the manager, so the
engine ends the stream itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from .admission import PreparedRequest
from .output import MarkerDetokenizer, OutputPipeline, ParserSpec
from .output.pipeline import merge_deltas
from .stopping import StopStringMatcher
from .types import Finished, FinishReason, GenerationEvent


class RequestStream:
    """Converts GenerationOutputs of one request into GenerationEvents."""

    def __init__(self, key: str, prepared: PreparedRequest, tokenizer, eos_token_ids: list[int],
                 parser: ParserSpec = ParserSpec("none")) -> None:  # fmt: skip
        self.key = key
        self.engine_finished = False
        self._prepared = prepared
        self._eos = set(eos_token_ids)
        self._output = OutputPipeline(MarkerDetokenizer(tokenizer, prepared.prompt_ids, parser.keep), parser.new(),
                                      StopStringMatcher(prepared.stop))  # fmt: skip
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
        return Finished(reason, len(self._prepared.prompt_ids), self._seen, error, self._output.reasoning_tokens)

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
            deltas = [d for token in new for d in self._output.push(token)]
            if self.engine_finished:
                deltas += self._output.finish()
            for delta in merge_deltas(deltas):
                yield delta
            if self._output.stopped:
                yield self._finished(FinishReason.STOP)
                return
            if self.engine_finished:
                reason = FinishReason.STOP if tokens and tokens[-1] in self._eos else FinishReason.LENGTH
                yield self._finished(reason)
                return
