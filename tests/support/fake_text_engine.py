"""A scripted grpc.aio text engine, for tests that need exact replies behind the real gateway.

It speaks the engine's stream protocol: `accepted` (with the prompt's token count) first, then `reasoning`
and `delta` pieces, then `finished`. It echoes the last message word by word; a few magic prompts script
failures, long streams, reasoning and tool calls; a request with `top_logprobs` set gets logprobs on every
delta (one made-up token per delta). It runs in the test's event loop (`start_fake_text_engine`) or as a
process of its own (`python -m tests.support.fake_text_engine --port N`), for tests whose gateway and
browser are subprocesses while the test itself is synchronous.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import defaultdict

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.common.config import TlsSettings
from services.common.errors import ContextLengthExceededError
from services.common.grpc_server import abort_with
from services.common.pb.proxyvision.v1 import common_pb2, text_engine_pb2 as pb, text_engine_pb2_grpc
from services.common.tls import bind_port

TEXT = "ministral-3-3b-reasoning"
STAND_IN = "mistralai/Ministral-3-3B-Reasoning-2512"
VERBATIM = "VERBATIM "  # prompt prefix: stream the rest unchanged (newlines kept), in small pieces
VERBATIM_PIECE = 5  # characters per delta: small enough to split markup such as "[THINK]" across deltas
# Prompt prefix: "REASON <reasoning>||<answer>" streams the reasoning as `reasoning` messages, then the
# answer (verbatim) as `delta` messages, both in VERBATIM_PIECE pieces; no "||": all of it is reasoning.
REASON = "REASON "
REASON_SPLIT = "||"
# Pause before each reasoning piece, so a reasoning of N pieces streams for about N * REASON_PAUSE s: long
# enough for a browser to show its "thinking" state, which a test can then wait for.
REASON_PAUSE = 0.05
# Prompt prefix: "TOOL_CALL <name> <json arguments>[ ;; <name> <json arguments>...]" streams each call as the
# real engine does (an opening delta with index, id and name, then the arguments in VERBATIM_PIECE pieces)
# and finishes with FINISH_REASON_TOOL_CALLS. Ids are "call_" + the call's index, zero-padded to 24 digits.
TOOL_CALL = "TOOL_CALL "
TOOL_CALL_SPLIT = " ;; "


def pieces(text: str) -> list[str]:
    return [text[i : i + VERBATIM_PIECE] for i in range(0, len(text), VERBATIM_PIECE)]


class ScriptedEngine(text_engine_pb2_grpc.TextEngineServicer):
    """Echoes the last message word by word; a few magic prompts script failures and reasoning."""

    def __init__(self) -> None:
        self.calls: list[tuple[pb.GenerateRequest, dict]] = []
        self.cancelled: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def Generate(self, request, context):
        self.calls.append((request, dict(context.invocation_metadata())))
        # grpc.aio cancels the handler where it waits: inside this generator (CancelledError) or in the
        # server's write between two yields, and then the abandoned generator is closed (GeneratorExit).
        try:
            prompt = request.messages[-1].content
            prompt_tokens = len(prompt.split())
            if prompt == "TOO_LONG":  # refused at admission: before `accepted`, as the real engine does
                await abort_with(
                    context,
                    ContextLengthExceededError("This model's maximum context length is 64 tokens", param="messages"),
                )
            yield accepted(prompt_tokens)
            if prompt == "SLEEP":
                await asyncio.sleep(10)
            if prompt == "FAIL_MIDWAY":
                yield pb.GenerateResponse(delta=pb.TextDelta(text="partial"))
                yield finished(pb.FINISH_REASON_ERROR, 1, 1, error="CUDA error: device fell over")
                return
            if prompt == "FOREVER":
                for i in range(500):  # bounded: a broken cancel fails the test instead of hanging it
                    yield pb.GenerateResponse(delta=pb.TextDelta(text=f"tick{i} "))
                    await asyncio.sleep(0.02)
            if prompt.startswith(TOOL_CALL):
                calls = [part.partition(" ") for part in prompt[len(TOOL_CALL) :].split(TOOL_CALL_SPLIT)]
                count = 0
                for index, (name, _, arguments) in enumerate(calls):
                    yield pb.GenerateResponse(tool_call=pb.ToolCallDelta(index=index, id=call_id(index), name=name))
                    for piece in pieces(arguments):
                        yield pb.GenerateResponse(tool_call=pb.ToolCallDelta(index=index, arguments=piece))
                    count += 1 + len(pieces(arguments))
                yield finished(pb.FINISH_REASON_TOOL_CALLS, prompt_tokens, count)
                return
            if prompt.startswith(REASON):
                reasoning, _, answer = prompt[len(REASON) :].partition(REASON_SPLIT)
                thought, said = pieces(reasoning), pieces(answer)
                for piece in thought:
                    await asyncio.sleep(REASON_PAUSE)
                    yield pb.GenerateResponse(reasoning=pb.ReasoningDelta(text=piece))
                for piece in said:
                    yield delta(piece, request)
                thinking = len(thought) + 2  # the real engine counts the two think markers as reasoning tokens
                yield finished(pb.FINISH_REASON_STOP, prompt_tokens, thinking + len(said), reasoning_tokens=thinking)
                return
            if prompt.startswith(VERBATIM):
                said = pieces(prompt[len(VERBATIM) :])
                for piece in said:
                    yield delta(piece, request)
                yield finished(pb.FINISH_REASON_STOP, prompt_tokens, len(said))
                return
            words = prompt.split()
            limit = request.sampling.max_tokens if request.sampling.HasField("max_tokens") else len(words)
            for i, word in enumerate(words[:limit]):
                yield delta(word if i == 0 else " " + word, request)
            reason = pb.FINISH_REASON_LENGTH if limit < len(words) else pb.FINISH_REASON_STOP
            yield finished(reason, prompt_tokens, min(limit, len(words)))
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled[request.request_id].set()
            raise

    async def GetModelInfo(self, request, context):
        return common_pb2.ModelInfo(
            name=TEXT,
            hf_id="tiny/ministral",
            max_context=2048,
            state=common_pb2.MODEL_STATE_READY,
            stand_in_for=STAND_IN,
        )


def call_id(index: int) -> str:
    """The id the fake gives tool call `index` ("call_" + 24 characters, as the real engine's)."""
    return f"call_{index:024d}"


def delta(text: str, request: pb.GenerateRequest) -> pb.GenerateResponse:
    """A text delta; with `top_logprobs` set, it carries one token for the whole text: logprob -0.5 - 0.5 * k
    for the k-th alternative, the text itself first (so `logprob` of the token is -0.5), then "alt1", "alt2"..."""
    if not request.sampling.HasField("top_logprobs"):
        return pb.GenerateResponse(delta=pb.TextDelta(text=text))
    top = [
        pb.TopLogprob(token=t, logprob=-0.5 - 0.5 * k, bytes=t.encode())
        for k, t in enumerate([text, *(f"alt{k}" for k in range(1, request.sampling.top_logprobs))])
    ]
    token = pb.TokenLogprob(
        token=text, logprob=-0.5, bytes=text.encode(), top_logprobs=top[: request.sampling.top_logprobs]
    )
    return pb.GenerateResponse(delta=pb.TextDelta(text=text, logprobs=[token]))


def accepted(prompt_tokens: int) -> pb.GenerateResponse:
    """The opening `Accepted` event (the request passed admission)."""
    return pb.GenerateResponse(accepted=pb.Accepted(prompt_tokens=prompt_tokens))


def finished(reason, prompt: int, completion: int, error: str = "", reasoning_tokens: int = 0) -> pb.GenerateResponse:
    """The closing `Finished` event with its usage (`prompt` and `completion` token counts)."""
    usage = pb.Usage(prompt_tokens=prompt, completion_tokens=completion, reasoning_tokens=reasoning_tokens)
    return pb.GenerateResponse(finished=pb.Finished(finish_reason=reason, usage=usage, error_message=error))


async def start_fake_text_engine(
    port: int = 0, tls: TlsSettings | None = None
) -> tuple[grpc.aio.Server, ScriptedEngine]:
    """A started server on 127.0.0.1:`port` (0: a free one) with the standard health service SERVING;
    with `tls`, secured exactly as a real engine is (services/common/tls.py).

    The servicer carries `address` and `health` (to flip SERVING / NOT_SERVING); the caller stops the server."""
    server = grpc.aio.server()
    servicer, health_servicer = ScriptedEngine(), health.aio.HealthServicer()
    text_engine_pb2_grpc.add_TextEngineServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = bind_port(server, f"127.0.0.1:{port}", tls)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.address, servicer.health = f"127.0.0.1:{bound}", health_servicer
    return server, servicer


async def _serve(port: int) -> None:
    server, _ = await start_fake_text_engine(port)
    await server.wait_for_termination()


def main() -> None:
    """Serve until SIGTERM (the process helper's stop), which ends the process with the server."""
    parser = argparse.ArgumentParser(prog="python -m tests.support.fake_text_engine", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(_serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
