"""The prompt the vision model sees for one image.

The instruction is the model entry's `vision_proxy.prompt_template`; the user's accompanying text is
context: a `{user_prompt}` placeholder places it, otherwise it is appended.
"""

from __future__ import annotations

PLACEHOLDER = "{user_prompt}"


def build_instruction(template: str, user_prompt: str) -> str:
    """Combine the operator's template and the user's text."""
    user_prompt = user_prompt.strip()
    if PLACEHOLDER in template:
        return template.replace(PLACEHOLDER, user_prompt)
    if not user_prompt:
        return template
    return f"{template}\n\nThe user's message that came with this image, for context: {user_prompt}"


def render_prompt(tokenizer, image_token: str, instruction: str) -> str:
    """The chat-templated prompt, with the one image placeholder where the image goes (the family adapter
    expands it after tokenizing)."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if text.count(image_token) != 1:
        raise ValueError(f"the chat template must place exactly one {image_token!r} per image")
    return text
