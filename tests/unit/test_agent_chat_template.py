"""The chat-template check (appending templates pass, rewriting ones are refused naming the message) and the
ids MessageEncoder appends between turns."""

import logging

import pytest

from agent_templates import HERMES_TEMPLATE, THINK_STRIPPING_TEMPLATE, tokenizer_with
from strive.agent.chat_template import (BASE_MESSAGES, REPRESENTATIVE_CONVERSATION, ChatTemplateError, MessageEncoder,
                                        check_chat_template, require_appending)

TOOLS = [{"type": "function", "function": {"name": "calc_gsm8k_reward", "description": "Score an answer.",
                                           "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module", params=["tiny-chatml", "hermes"])
def appending(request):
    template = None if request.param == "tiny-chatml" else HERMES_TEMPLATE
    return MessageEncoder(tokenizer_with(template), tools=TOOLS)


@pytest.fixture(scope="module")
def rewriting():
    return MessageEncoder(tokenizer_with(THINK_STRIPPING_TEMPLATE), tools=TOOLS)


def test_appending_templates_pass(appending):
    assert check_chat_template(appending).ok
    assert require_appending(appending).ok


def test_rewriting_template_is_refused_naming_the_message(rewriting):
    result = check_chat_template(rewriting)
    assert not result.ok and result.message_index == 5  # the second user message strips earlier <think>
    assert REPRESENTATIVE_CONVERSATION[5]["role"] == "user"
    assert "adding message 5 (user)" in result.reason and "inside message 2 (assistant)" in result.reason
    assert "<think>I should use the" in result.reason
    with pytest.raises(ChatTemplateError, match=r"rewrites earlier turns: adding message 5 \(user\)"):
        require_appending(rewriting)


def test_rewriting_template_allowed_warns_and_still_encodes(rewriting, caplog):
    with caplog.at_level(logging.WARNING, logger="strive.agent.chat_template"):
        assert not require_appending(rewriting, allow_rewrites=True).ok
    assert "allow_rewrites" in caplog.text
    # The delta is rendered after a base without assistant turns, so stripping cannot touch it.
    ids = rewriting.observation_ids([{"role": "tool", "content": "ok"}], after=rewriting.closing_ids[:1])
    assert rewriting.tokenizer.decode(ids) == (
        "\n<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_a_rewrite_at_the_first_assistant_turn_is_found():
    # A template that puts the generation prompt differently from a rendered assistant turn breaks at once.
    odd = HERMES_TEMPLATE.replace("{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}",
                                  "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n<answer>' }}")
    result = check_chat_template(MessageEncoder(tokenizer_with(odd)))
    assert not result.ok and result.message_index == 2 and "in the generation prompt" in result.reason


def test_delta_is_verls_plus_the_closing_newline():
    enc = MessageEncoder(tokenizer_with(HERMES_TEMPLATE), tools=TOOLS)
    tool = [{"role": "tool", "content": "4"}, {"role": "tool", "content": "5"}]  # parallel calls: one block
    # verl's SGLang rollout: ids(base + new)[len(ids(base)):], then the generation prompt.
    base = enc.ids(BASE_MESSAGES, add_generation_prompt=False)
    verl = enc.ids([*BASE_MESSAGES, *tool], add_generation_prompt=True)[len(base):]
    ours = enc.observation_ids(tool, after=enc.closing_ids[:1])  # the engine generated <|im_end|>
    assert ours == enc.tokenizer.encode("\n", add_special_tokens=False) + verl
    assert enc.tokenizer.decode(ours).count("<|im_start|>user") == 1


def test_closing_and_prompt_ids(appending):
    assert appending.tokenizer.decode(appending.closing_ids) == "<|im_end|>\n"
    prompt = appending.prompt_ids([{"role": "user", "content": "hi"}])
    assert appending.tokenizer.decode(prompt).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_template_kwargs_reach_the_template():
    template = HERMES_TEMPLATE.replace("{{ '<|im_start|>assistant\\n' }}{%- endif %}",
                                       "{{ '<|im_start|>assistant\\n' }}{%- if not enable_thinking %}"
                                       "{{ '<think></think>' }}{%- endif %}{%- endif %}")
    enc = MessageEncoder(tokenizer_with(template), template_kwargs={"enable_thinking": False})
    ids = enc.observation_ids([{"role": "user", "content": "x"}], after=enc.closing_ids)
    assert enc.tokenizer.decode(ids) == "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n<think></think>"


def test_a_template_that_hides_assistant_content_is_refused():
    enc = MessageEncoder(tokenizer_with(HERMES_TEMPLATE.replace("'<|im_start|>assistant\\n' + content",
                                                                "'<|im_start|>assistant\\n'")))
    with pytest.raises(ChatTemplateError, match="content verbatim"):
        _ = enc.closing_ids


def test_a_tool_turn_rendered_by_context_is_found():
    # Appends, but writes a tool message differently after an assistant turn than after the base's user message:
    # the delta rendered after verl's base conversation would then differ from the real rendering.
    template = HERMES_TEMPLATE.replace(
        "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}",
        "{%- if messages[loop.index0 - 1].role == 'assistant' %}{{ '<|im_start|>user name=tool' }}"
        "{%- elif loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}")
    enc = MessageEncoder(tokenizer_with(template), tools=TOOLS)
    result = check_chat_template(enc)
    assert not result.ok and result.message_index == 3
    assert "after message 2 (assistant) for messages 3..3" in result.reason and "name=tool" in result.reason


def test_the_prompt_carries_the_tool_schemas():
    enc = MessageEncoder(tokenizer_with(HERMES_TEMPLATE), tools=TOOLS)
    text = enc.tokenizer.decode(enc.prompt_ids([{"role": "user", "content": "hi"}]))
    assert '<tools>\n{"type": "function", "function": {"name": "calc_gsm8k_reward"' in text
