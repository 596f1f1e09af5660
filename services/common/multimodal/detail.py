"""How many image tokens an image costs at each `detail` level: one rule for the proxy's captions (vision engine)
and for native models (text engine).

An image's natural cost (its tokens at its own size) comes from its family's adapter
(services/common/multimodal/): for the Qwen-VL families one token covers a 28x28 (Qwen3-VL: 32x32) pixel
square, so a token budget is a pixel budget; Idefics3/SmolVLM turn it into a tile count; Gemma 3 costs 256
tokens whatever the budget. The adapter resizes the image to fit, keeping its aspect ratio.
"""

from __future__ import annotations

from ..generation import Detail

LOW_DETAIL_TOKENS = 256
MIN_IMAGE_TOKENS = 4


def image_token_budget(detail: Detail, natural: int, *, max_image_tokens: int, memory_tokens: int) -> int:
    """Maximum image tokens for one image.

    `natural`: the image's tokens at its own size.
    low: 256. high: `max_image_tokens`. auto: the image at its own size when that is at most `max_image_tokens`,
    else capped; always within what one sequence may take of the memory budget (`memory_tokens`).
    """
    if detail == Detail.LOW:
        budget = LOW_DETAIL_TOKENS
    elif detail == Detail.HIGH:
        budget = max_image_tokens
    else:
        budget = min(max(natural, LOW_DETAIL_TOKENS), max_image_tokens)
    return max(MIN_IMAGE_TOKENS, min(budget, max_image_tokens, memory_tokens))
