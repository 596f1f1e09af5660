"""The multi-turn section of `make bench`: what the prefix cache (and, with images, the caption cache) buys a
conversation whose history grows turn by turn.

Every chat client re-sends the whole conversation each turn, so turn N's prompt is turn N-1's plus one answer
and one question. With `params.prefix_caching` the text engine finds the earlier turns' KV blocks and
prefills only what is new; without it, it prefills everything again. The section runs the same 5-turn
conversations (greedy, fixed answers' length) against a stack with the cache on and one with it off, in one
run, and reports each turn's time to first token. The image variant re-sends one image in the first user
message every turn: its caption comes from the vision engine's cache from turn 2 on.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .native_vision import _image_part, stream_chat
from .vision import fresh_image

# A long, fixed system prompt (a few hundred tokens) so the prefix is worth caching, as agent prompts are.
SYSTEM = " ".join(
    f"Rule {i}: answer the user's question about the lighthouse, the harbour and the ships precisely, "
    f"citing the logbook entry {i} when it helps."
    for i in range(1, 25)
)
QUESTIONS = [
    "Tell me about the lighthouse keeper.",
    "What did he write in the logbook on stormy nights?",
    "Which ships came into the harbour that winter?",
    "How did the harbour master keep the lamps lit?",
    "What happened when the fog came in?",
]


def conversation(
    base_url: str, model: str, turns: int, max_tokens: int, tag: str, image: bytes | None = None
) -> list[float]:
    """TTFT (ms) of each turn of one conversation; each turn re-sends the whole history (and the image). `tag`
    opens the system prompt, so no other conversation shares its prefix (turn 1 is never a cache hit)."""
    first = QUESTIONS[0] if image is None else [{"type": "text", "text": QUESTIONS[0]}, _image_part(image)]
    messages = [{"role": "system", "content": f"Session {tag}. {SYSTEM}"}, {"role": "user", "content": first}]
    ttfts = []
    for turn in range(turns):
        answer = stream_chat(base_url, model, messages, max_tokens)
        ttfts.append(answer.ttft_ms)
        messages = [
            *messages,
            {"role": "assistant", "content": answer.text or "..."},
            {"role": "user", "content": QUESTIONS[(turn + 1) % len(QUESTIONS)]},
        ]
    return ttfts


@dataclass
class MultiTurnResults:
    """Per-turn TTFT medians (ms) by configuration."""

    rows: dict[str, list[float]]

    def report(self) -> str:
        lines = [
            "TTFT ms per turn (medians)          "
            + "  ".join(f"turn {t + 1:<3}" for t in range(len(next(iter(self.rows.values())))))
        ]
        for label, ttfts in self.rows.items():
            lines.append(
                f"  {label:32s}  "
                + "  ".join(f"{ms:8.1f}" for ms in ttfts)
                + f"   turn 5 / turn 1 = {ttfts[-1] / ttfts[0]:.2f}"
            )
        return "\n".join(lines)


def run_multiturn(
    contenders: dict[str, tuple[str, str, bool]], repeats: int = 3, turns: int = 5, max_tokens: int = 24
) -> MultiTurnResults:
    """`contenders`: label -> (base URL, model, with an image). Conversations alternate between contenders; each
    has its own system prompt and image."""
    runs: dict[str, list[list[float]]] = {label: [] for label in contenders}
    for label, (base_url, model, with_image) in contenders.items():  # warm-up
        conversation(base_url, model, 1, 4, f"warm-up {label}", fresh_image() if with_image else None)
    for r in range(repeats):
        for label, (base_url, model, with_image) in contenders.items():
            image = fresh_image() if with_image else None
            runs[label].append(conversation(base_url, model, turns, max_tokens, f"{label} #{r}", image))
    return MultiTurnResults(
        {label: [statistics.median(run[t] for run in rs) for t in range(turns)] for label, rs in runs.items()}
    )
