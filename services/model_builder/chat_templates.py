"""Chat templates that render exactly as the real checkpoints' templates do.

Ministral-3 Reasoning (`chat_template.jinja` of mistralai/Ministral-3-3B-Reasoning-2512), Mistral's layout::

    <s>[SYSTEM_PROMPT]sys[/SYSTEM_PROMPT][AVAILABLE_TOOLS][..][/AVAILABLE_TOOLS][INST]user[/INST][THINK]..[/THINK]answer</s>

Rules of the real template, reproduced here (written anew, same output):
- with no leading system message, the default one (the repo's `SYSTEM_PROMPT.txt`, which teaches the model
  to think in `[THINK]..[/THINK]`) is injected; a system message replaces it. System content is a string or
  `text` / `thinking` chunks; a system message anywhere but first is refused, like any unknown role;
- after the system part, user and assistant (without tool calls) messages must alternate, user first;
- user content is a string or `text` / `image` / `image_url` chunks (`[IMG]`); a [text, image] pair is
  rendered image first;
- assistant content is a string or `text` / `thinking` chunks (`[THINK]..[/THINK]`), then each tool call as
  `[TOOL_CALLS]name[ARGS]arguments` (JSON unless already a string; an empty string becomes `{}`), then `</s>`;
  an assistant message with neither content nor tool calls is refused;
- a `tool` message is `[TOOL_RESULTS]content[/TOOL_RESULTS]`;
- the model continues right after `[/INST]`, so `add_generation_prompt` adds nothing.

The bench checkpoint uses the same template with no default system prompt (`ministral3_chat_template("")`),
so its prompts stay as short as before.

Qwen2-VL: ChatML with the default system prompt and `<|vision_start|><|image_pad|><|vision_end|>` per
image part (`<|video_pad|>` per video part), rendering exactly as Qwen/Qwen2-VL-7B-Instruct's does.

Qwen3: Qwen/Qwen3-0.6B's template itself (tools, Hermes-style <tool_call> JSON, <tool_response>, <think>
reasoning, `enable_thinking`), byte for byte.
"""

import json

from .hub_files import data_text

# The Reasoning repo's SYSTEM_PROMPT.txt, which its chat template also carries as the default.
MINISTRAL3_REASONING_SYSTEM_PROMPT = (
    "# HOW YOU SHOULD THINK AND ANSWER\n\n"
    "First draft your thinking process (inner monologue) until you arrive at a response. Format your response "
    "using Markdown, and use LaTeX for any mathematical equations. Write both your thoughts and the response in "
    "the same language as the input.\n\n"
    "Your thinking process must follow the template below:[THINK]Your thoughts or/and draft, like working "
    "through an exercise on scratch paper. Be as casual and as long as you want until you are confident to "
    "generate the response to the user.[/THINK]Here, provide a self-contained response."
)

_MINISTRAL3_TEMPLATE_BODY = """
{%- macro fail(text) -%}{{- raise_exception(text) -}}{%- endmacro -%}
{%- macro chunks(content, allowed, where) -%}
    {%- for chunk in content -%}
        {%- if chunk['type'] not in allowed -%}
            {{- fail('Only ' + allowed | join(', ') + ' chunks are supported in ' + where + ' contents.') -}}
        {%- elif chunk['type'] == 'text' -%}
            {{- chunk['text'] -}}
        {%- elif chunk['type'] == 'thinking' -%}
            {{- '[THINK]' + chunk['thinking'] + '[/THINK]' -}}
        {%- else -%}
            {{- '[IMG]' -}}
        {%- endif -%}
    {%- endfor -%}
{%- endmacro -%}

{{- bos_token -}}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = messages[0]['content'] -%}
    {{- '[SYSTEM_PROMPT]' -}}
    {{- system if system is string else chunks(system, ['text', 'thinking'], 'system message') -}}
    {{- '[/SYSTEM_PROMPT]' -}}
    {%- set conversation = messages[1:] -%}
{%- else -%}
    {%- if default_system_prompt -%}
        {{- '[SYSTEM_PROMPT]' + default_system_prompt + '[/SYSTEM_PROMPT]' -}}
    {%- endif -%}
    {%- set conversation = messages -%}
{%- endif -%}
{%- if tools is defined and tools is not none and tools | length > 0 -%}
    {{- '[AVAILABLE_TOOLS]' + (tools | tojson) + '[/AVAILABLE_TOOLS]' -}}
{%- endif -%}

{%- set turn = namespace(count=0) -%}
{%- for message in conversation -%}
    {%- set plain_assistant = message['role'] == 'assistant' and not message.get('tool_calls') -%}
    {%- if message['role'] == 'user' or plain_assistant -%}
        {%- if (message['role'] == 'user') != (turn.count % 2 == 0) -%}
            {{- fail('After the optional system message, conversation roles must alternate user and assistant '
                     'roles except for tool calls and results.') -}}
        {%- endif -%}
        {%- set turn.count = turn.count + 1 -%}
    {%- endif -%}
{%- endfor -%}

{%- for message in conversation -%}
    {%- set content = message['content'] if 'content' in message else none -%}
    {%- if message['role'] == 'user' -%}
        {%- if content is string -%}
            {{- '[INST]' + content + '[/INST]' -}}
        {%- elif content -%}
            {%- if content | length == 2 and content[0]['type'] == 'text'
                  and content[1]['type'] in ['image', 'image_url'] -%}
                {%- set content = [content[1], content[0]] -%}
            {%- endif -%}
            {{- '[INST]' + chunks(content, ['text', 'image', 'image_url'], 'user message') + '[/INST]' -}}
        {%- else -%}
            {{- fail('User message must have a string or a list of chunks in content') -}}
        {%- endif -%}
    {%- elif message['role'] == 'assistant' -%}
        {%- set calls = message.get('tool_calls') or [] -%}
        {%- if not content and not calls -%}
            {{- fail('Assistant message must have a string or a list of chunks in content or a list of tool calls.') -}}
        {%- endif -%}
        {%- if content is string -%}
            {{- content -}}
        {%- elif content -%}
            {{- chunks(content, ['text', 'thinking'], 'assistant message') -}}
        {%- endif -%}
        {%- for call in calls -%}
            {%- set arguments = call['function']['arguments'] -%}
            {%- if arguments is not string -%}
                {%- set arguments = arguments | tojson -%}
            {%- elif arguments == '' -%}
                {%- set arguments = '{}' -%}
            {%- endif -%}
            {{- '[TOOL_CALLS]' + call['function']['name'] + '[ARGS]' + arguments -}}
        {%- endfor -%}
        {{- eos_token -}}
    {%- elif message['role'] == 'tool' -%}
        {{- '[TOOL_RESULTS]' + content | string + '[/TOOL_RESULTS]' -}}
    {%- else -%}
        {{- fail('Only user, assistant and tool roles are supported, got ' + message['role'] + '.') -}}
    {%- endif -%}
{%- endfor -%}
""".strip()


def ministral3_chat_template(default_system_prompt: str) -> str:
    """The Ministral-3 template with `default_system_prompt` injected when a conversation brings none."""
    # A JSON string literal is a valid Jinja string literal (the prompt holds no Jinja delimiters).
    return "{%- set default_system_prompt = " + json.dumps(default_system_prompt) + " -%}\n" + _MINISTRAL3_TEMPLATE_BODY


MINISTRAL3_REASONING_CHAT_TEMPLATE = ministral3_chat_template(MINISTRAL3_REASONING_SYSTEM_PROMPT)
MINISTRAL3_CHAT_TEMPLATE = ministral3_chat_template("")  # the bench checkpoint's

QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen/Qwen3-0.6B's chat template, verbatim (the `chat_template` of its tokenizer_config.json; the same
# text as Qwen3-8B's at 895c8d1 and as TRL vendors it for template identification): tools listed in
# <tools></tools> in the system turn, assistant tool calls as <tool_call>{"name": .., "arguments": ..}
# </tool_call>, tool results as <tool_response> inside a user turn, the reasoning of the turns after the
# last real user query as <think>..</think> (from `reasoning_content` or split off `content`), and
# `enable_thinking=False` closing an empty think block in the generation prompt. Kept byte-identical on
# purpose: tools recognise a model family by comparing this string.
QWEN3_CHAT_TEMPLATE = data_text("qwen3/chat_template.jinja")

# Qwen/Qwen3-VL-2B-Instruct's chat template (its chat_template.json; the Instruct repos of every size share
# it), as public sources quote it: no default system prompt (unlike Qwen2-VL's), a system message's text parts
# joined, tools in <tools></tools> in the system turn, `<|vision_start|><|image_pad|><|vision_end|>` per image
# (also inside tool results), assistant tool calls as <tool_call> JSON, tool results as <tool_response> in a
# user turn. Rebuilt from those rules, not copied: two macros stand for the file's repeated blocks, so the
# bytes differ from the hub's file while the text it renders for these conversations is the same. Its tools
# preamble and <tool_call> / <tool_response> blocks repeat QWEN3_CHAT_TEMPLATE's on purpose: that one must stay
# one verbatim string, and each template reads top to bottom like its repo's file.
QWEN3_VL_CHAT_TEMPLATE = data_text("qwen3-vl/chat_template.jinja")
