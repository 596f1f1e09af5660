from services.common.generation import Detail
from services.common.multimodal.detail import LOW_DETAIL_TOKENS, image_token_budget
from services.vision_engine.captioner.prompts import build_instruction


def test_user_prompt_is_placed_or_appended():
    assert build_instruction("Describe this image in detail:", "") == "Describe this image in detail:"
    assert build_instruction("Q: {user_prompt}\nDescribe:", "What colour?") == "Q: What colour?\nDescribe:"
    appended = build_instruction("Describe this image in detail:", "What is in it?")
    assert appended.startswith("Describe this image in detail:") and appended.endswith("What is in it?")


def test_detail_budgets():
    kw = {"max_image_tokens": 1280, "memory_tokens": 100_000}
    large, small, medium = (4000 * 3000) // 28**2, (280 * 280) // 28**2, (700 * 700) // 28**2  # Qwen2-VL's 28x28
    assert image_token_budget(Detail.LOW, large, **kw) == LOW_DETAIL_TOKENS
    assert image_token_budget(Detail.HIGH, large, **kw) == 1280
    assert image_token_budget(Detail.AUTO, large, **kw) == 1280  # large: capped
    assert image_token_budget(Detail.AUTO, small, **kw) == LOW_DETAIL_TOKENS  # small: its own size fits in low
    assert image_token_budget(Detail.AUTO, medium, **kw) == 625  # medium: its own size
    assert image_token_budget(Detail.HIGH, large, max_image_tokens=1280, memory_tokens=300) == 300
