"""Qwen-style chat templates for the tiny models (written here, in the Qwen layout).

Instruct: the assistant turn is rendered exactly as given; no empty ``<think></think>`` is
ever inserted, so what a model is trained on is what it sees at inference.
Thinking: the generation prompt opens ``<think>\\n`` and an assistant message's
``reasoning_content`` (if any) is rendered inside ``<think>…</think>``.
"""

from __future__ import annotations

# Renders one message's content: a plain string, or a list of {"type": "text"|"image"|"video"} blocks.
_CONTENT_MACRO = (
    "{%- macro render_content(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for block in content -%}"
    "{%- if block.type == 'image' or 'image' in block or 'image_url' in block -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif block.type == 'video' or 'video' in block -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in block -%}{{- block.text -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
)

_LLAVA_CONTENT_MACRO = _CONTENT_MACRO.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\\n").replace(
    "<|vision_start|><|video_pad|><|vision_end|>", "<video>\\n"
)

_MESSAGES = (
    "{%- for message in messages -%}"
    "{%- if message.role == 'assistant' -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if message.reasoning_content is defined and message.reasoning_content -%}"
    "{{- '<think>\\n' + message.reasoning_content.strip() + '\\n</think>\\n\\n' -}}"
    "{%- endif -%}"
    "{{- render_content(message.content) -}}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- else -%}"
    "{{- '<|im_start|>' + message.role + '\\n' -}}{{- render_content(message.content) -}}{{- '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

INSTRUCT_CHAT_TEMPLATE = (
    _CONTENT_MACRO + _MESSAGES + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)

THINKING_CHAT_TEMPLATE = (
    _CONTENT_MACRO
    + _MESSAGES
    + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}"
)

# LLaVA-interleave style: ChatML turns, one "<image>" placeholder per image block.
LLAVA_CHAT_TEMPLATE = (
    _LLAVA_CONTENT_MACRO
    + _MESSAGES
    + "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
