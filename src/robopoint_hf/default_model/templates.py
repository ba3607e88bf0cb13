"""The prompt templates the published RoboPoint checkpoints were trained and evaluated with.

The original code builds prompts with a ``Conversation`` object (``robopoint/conversation.py``); three of its
templates matter for RoboPoint and are re-expressed here as Jinja chat templates, so that
``processor.apply_chat_template(messages)`` renders the very same strings:

* ``vicuna_v1`` -- the training template of every published checkpoint (``--version v1``).
* ``llava_v1`` -- the original evaluation default (``model_vqa.py``); differs from ``vicuna_v1`` only by two
  words of the system prompt ("user" -> "human"). The published Where2Place numbers were produced with it.
* ``llava_llama_2`` -- what the original demo and CLI used for the Llama-2 checkpoints (which were nevertheless
  trained with ``vicuna_v1``).

The config of a checkpoint records the template it was trained with (``RoboPointConfig.prompt_template``) so that
every entry point uses the same one: the original's template drift (train vs. eval vs. demo) is a bug we do not
copy, but the other two stay available for exact reproduction of published numbers.

Assistant turns are wrapped in ``{% generation %}`` markers so that ``return_assistant_tokens_mask=True`` (and TRL's
``assistant_only_loss``) train on exactly the answer and its closing ``</s>``.

This module is pure Python: it is copied next to the model code on the Hub.
"""

from __future__ import annotations

IMAGE_PLACEHOLDER = "<image>"

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
LLAVA_LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)

# Renders one message's content: a plain string, or a list of {"type": "image"} / {"type": "text"} parts.
# An image part becomes "<image>\n", as the original puts the image tag on its own line before the question.
_CONTENT_MACRO = """
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}{%- for part in content -%}
{%- if part['type'] == 'image' -%}{{ '<image>\\n' }}
{%- elif part['type'] == 'text' -%}{{ part['text'] }}
{%- endif -%}{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
"""

# SeparatorStyle.TWO: "<system> USER: <q> ASSISTANT: <a></s>USER: ..." and a bare "ASSISTANT:" to generate.
_TWO_STYLE = (
    _CONTENT_MACRO
    + """
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set system = render_content(messages[0]['content']) -%}{%- set turns = messages[1:] -%}
{%- else -%}{%- set system = "__SYSTEM__" -%}{%- set turns = messages -%}{%- endif -%}
{{- system + ' ' -}}
{%- for message in turns -%}
{%- if message['role'] == 'user' -%}{{- 'USER: ' + render_content(message['content']) + ' ' -}}
{%- elif message['role'] == 'assistant' -%}{{- 'ASSISTANT:' -}}
{%- generation -%}{{- ' ' + render_content(message['content']) + '</s>' -}}{%- endgeneration -%}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}
"""
)

# SeparatorStyle.LLAMA_2: "[INST] <<SYS>>\\n<system>\\n<</SYS>>\\n\\n<q> [/INST] <a> </s><s>[INST] <q2> [/INST]".
# The generation prompt is empty: the prompt already ends with "[/INST]".
_LLAMA_2_STYLE = (
    _CONTENT_MACRO
    + """
{%- if messages and messages[0]['role'] == 'system' -%}
{%- set system = render_content(messages[0]['content']) -%}{%- set turns = messages[1:] -%}
{%- else -%}{%- set system = "__SYSTEM__" -%}{%- set turns = messages -%}{%- endif -%}
{%- for message in turns -%}
{%- if message['role'] == 'user' -%}
{%- set text = render_content(message['content']) -%}
{%- if loop.first and system -%}{%- set text = '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + text -%}{%- endif -%}
{{- ('' if loop.first else '<s>') + '[INST] ' + text + ' [/INST]' -}}
{%- elif message['role'] == 'assistant' -%}
{%- generation -%}{{- ' ' + render_content(message['content']) + ' </s>' -}}{%- endgeneration -%}
{%- endif -%}
{%- endfor -%}
"""
)

CHAT_TEMPLATES: dict[str, str] = {
    "vicuna_v1": _TWO_STYLE.replace("__SYSTEM__", VICUNA_V1_SYSTEM),
    "llava_v1": _TWO_STYLE.replace("__SYSTEM__", LLAVA_V1_SYSTEM),
    "llava_llama_2": _LLAMA_2_STYLE.replace("__SYSTEM__", LLAVA_LLAMA_2_SYSTEM),
}
"""Jinja chat template of each prompt template, by name."""

TEMPLATE_NAMES = tuple(CHAT_TEMPLATES)


def get_chat_template(name: str) -> str:
    """Returns the Jinja chat template called ``name`` (one of :data:`TEMPLATE_NAMES`)."""
    try:
        return CHAT_TEMPLATES[name]
    except KeyError:
        raise ValueError(f"Unknown prompt template {name!r}; expected one of {', '.join(TEMPLATE_NAMES)}.") from None


def template_name_of(chat_template: str | None) -> str | None:
    """Returns the name of a known chat template, or ``None`` for a custom one."""
    for name, template in CHAT_TEMPLATES.items():
        if template == chat_template:
            return name
    return None


__all__ = [
    "CHAT_TEMPLATES",
    "IMAGE_PLACEHOLDER",
    "LLAVA_LLAMA_2_SYSTEM",
    "LLAVA_V1_SYSTEM",
    "TEMPLATE_NAMES",
    "VICUNA_V1_SYSTEM",
    "get_chat_template",
    "template_name_of",
]
