"""What the reward model and the judge read (strive/reward/rm_inputs.py, strive/reward/judge.py): the policy's ids as
they are when the tokenizers agree, else the chat re-rendered with the reward model's own template."""

import pytest

from strive.models.tiny import build_tokenizer
from strive.reward.judge import judge_prompt, parse_score
from strive.reward.rm_inputs import chat_of, prompt_text, rm_input_ids, same_tokenizer, truncate

OTHER_TEMPLATE = ("{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}"
                  "{% if add_generation_prompt %}[ASSISTANT] {% endif %}")


@pytest.fixture
def policy():
    return build_tokenizer()


@pytest.fixture
def other():
    tok = build_tokenizer()
    tok.chat_template = OTHER_TEMPLATE
    return tok


def _sample(tok):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
    prompt = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                 add_special_tokens=False)["input_ids"]
    response = tok("It is 5.", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return messages, prompt, response


def test_same_tokenizer_uses_the_ids_directly(policy):
    messages, prompt, response = _sample(policy)
    assert same_tokenizer(policy, build_tokenizer())
    assert rm_input_ids(prompt, response, messages, policy, build_tokenizer(), switch=False) == prompt + response


def test_different_template_re_renders_the_chat(policy, other):
    assert not same_tokenizer(policy, other)
    messages, prompt, response = _sample(policy)
    ids = rm_input_ids(prompt, response, messages, policy, other, switch=True)
    assert other.decode(ids) == "[SYSTEM] Be brief.\n[USER] What is 2+3?\n[ASSISTANT] It is 5.\n"


def test_response_special_tokens_do_not_leak_and_missing_messages_fall_back(policy):
    _, prompt, response = _sample(policy)
    chat = chat_of(prompt, response, None, policy)
    assert chat[-1] == {"role": "assistant", "content": "It is 5."}  # no <|im_end|>
    assert chat[0]["role"] == "user" and "What is 2+3?" in chat[0]["content"]


def test_different_vocabulary_re_renders(policy, smollm2_dir):
    from transformers import AutoTokenizer

    rm_tok = AutoTokenizer.from_pretrained(smollm2_dir)
    messages, prompt, response = _sample(policy)
    assert not same_tokenizer(policy, rm_tok)
    ids = rm_input_ids(prompt, response, messages, policy, rm_tok, switch=True)
    chat = messages + [{"role": "assistant", "content": "It is 5."}]
    assert ids == rm_tok(rm_tok.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"]


def test_truncation_keeps_the_first_tokens():
    assert truncate([1, 2, 3, 4], 3) == ([1, 2, 3], True)
    assert truncate([1, 2], 3) == ([1, 2], False)
    assert truncate([1, 2], None) == ([1, 2], False)


def test_judge_prompt_and_score_parsing(policy):
    messages, prompt, _ = _sample(policy)
    assert prompt_text(prompt, messages, policy) == "What is 2+3?"
    assert judge_prompt("Q: {prompt} A: {response} R: {ground_truth}", "q", "a", 5) == "Q: q A: a R: 5"
    assert judge_prompt("{prompt}{response}{ground_truth}", "q", "a", None) == "qa"
    pattern = r"(-?\d+(?:\.\d+)?)"
    assert parse_score("Score: 7", pattern, 10) == (0.7, True)
    assert parse_score("12/10!", pattern, 10) == (1.0, True)  # clipped
    assert parse_score("-3", pattern, 10) == (0.0, True)
    assert parse_score("great answer", pattern, 10) == (0.0, False)
    assert parse_score("rating=4.5", r"rating=\S+", 5) == (0.0, False)  # whole match, not a number
    assert parse_score("rating: 4.5", r"rating: (\S+)", 5) == (0.9, True)
