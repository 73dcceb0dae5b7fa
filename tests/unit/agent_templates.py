"""Hand-written chat templates for the agent tests: a hermes-style ChatML with tools (like Qwen2.5's, it appends)
and the same with Qwen3's habit of dropping `<think>...</think>` from assistant turns before the last user
message (it rewrites earlier turns)."""

_SYSTEM = (
    "{%- if tools %}"
    "{{ '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{ messages[0].content }}{%- else %}{{ 'You are a helpful assistant.' }}"
    "{%- endif %}"
    "{{ '\\n\\n# Tools\\n\\n<tools>' }}"
    "{%- for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{%- endfor %}"
    "{{ '\\n</tools>\\n\\nCall a function with <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>.' }}"
    "{{ '<|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{ '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
)

_ASSISTANT = (
    "{{ '<|im_start|>assistant\\n' + content }}"
    "{%- for call in message.tool_calls or [] %}"
    "{{ '\\n<tool_call>\\n{\"name\": \"' + call.function.name + '\", \"arguments\": ' }}"
    "{{ call.function.arguments | tojson }}{{ '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{ '<|im_end|>\\n' }}"
)

_TURNS = (
    "{%- for message in messages %}"
    "{%- if message.role == 'user' %}"
    "{{ '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set content = message.content %}"
    "__STRIP__"
    + _ASSISTANT +
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{%- endif %}"
    "{{ '\\n<tool_response>\\n' + message.content + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

HERMES_TEMPLATE = _SYSTEM + _TURNS.replace("__STRIP__", "")

_LAST_USER = (
    "{%- set ns = namespace(last_user=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_user = loop.index0 %}{%- endif %}{%- endfor %}"
)
_STRIP_THINK = (
    "{%- if loop.index0 < ns.last_user and '</think>' in content %}"
    "{%- set content = content.split('</think>')[-1] %}"
    "{%- endif %}"
)
THINK_STRIPPING_TEMPLATE = _LAST_USER + _SYSTEM + _TURNS.replace("__STRIP__", _STRIP_THINK)


def tokenizer_with(template: str | None):
    """strive's tiny byte-level tokenizer (ChatML specials) with `template` (None: its own ChatML template)."""
    from strive.models.tiny import build_tokenizer

    tok = build_tokenizer()
    if template is not None:
        tok.chat_template = template
    return tok
