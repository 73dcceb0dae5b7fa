"""What a reward model or an LLM judge reads: a (prompt, response) pair in the scoring model's own tokens.

Why it exists: the policy and the reward model often have different tokenizers or chat templates (a Llama reward
model scoring a Qwen policy). verl's reward-model worker then decodes the response with the policy tokenizer
(`reward_model.model.input_tokenizer`), appends it to the prompt's chat messages as the assistant turn, and renders
that chat with the reward model's template. strive does the same, on the controller, and skips the round trip when
both tokenizers have the same vocabulary and chat template (then the policy's ids are the reward model's ids).

What it chose:
- the prompt's messages are the dataset row's (data.return_raw_chat, switched on for model-scored runs); a prompt
  without them is decoded and used as one user message;
- the response is decoded with skip_special_tokens=True (verl's choice), so the policy's EOS does not leak into
  another template;
- an input longer than reward_model.max_length keeps its first max_length tokens (verl's right truncation); the
  caller warns once per run.

Exercised by `pytest tests/unit/test_reward_model_inputs.py`.
"""

from __future__ import annotations

from typing import Any, Optional


def same_tokenizer(a: Any, b: Any) -> bool:
    """Both tokenizers turn the same text into the same ids and render chats the same way."""
    if a is b:
        return True
    return (getattr(a, "chat_template", None) == getattr(b, "chat_template", None) and a.get_vocab() == b.get_vocab()
            and a.bos_token_id == b.bos_token_id and a.eos_token_id == b.eos_token_id)


def chat_of(prompt_ids: list[int], response_ids: list[int], messages: Optional[list[dict]], policy_tok: Any) -> list:
    """The conversation as messages: the prompt's own (or the decoded prompt as a user turn), then the response."""
    response = policy_tok.decode(response_ids, skip_special_tokens=True)
    if not messages:
        messages = [{"role": "user", "content": policy_tok.decode(prompt_ids, skip_special_tokens=True)}]
    return [dict(m) for m in messages] + [{"role": "assistant", "content": response}]


def render(chat: list[dict], tok: Any, generation_prompt: bool = False) -> list[int]:
    """The chat in `tok`'s template, as ids (a reward model's chat ends with the assistant turn: no generation
    prompt; a judge's ends with the user turn it answers)."""
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=generation_prompt)
    return list(tok(text, add_special_tokens=False)["input_ids"])


def rm_input_ids(prompt_ids: list[int], response_ids: list[int], messages: Optional[list[dict]], policy_tok: Any,
                 rm_tok: Any, switch: bool) -> list[int]:
    """The reward model's input for one sample: the policy's ids unchanged (switch=False), else the chat
    re-rendered with the reward model's template."""
    if not switch:
        return list(prompt_ids) + list(response_ids)
    return render(chat_of(prompt_ids, response_ids, messages, policy_tok), rm_tok)


def truncate(ids: list[int], max_length: Optional[int]) -> tuple[list[int], bool]:
    """The first max_length ids, and whether any were cut (None: no limit)."""
    if max_length is None or len(ids) <= max_length:
        return ids, False
    return ids[:max_length], True


def prompt_text(prompt_ids: list[int], messages: Optional[list[dict]], policy_tok: Any) -> str:
    """The question as a judge reads it: the last user message's text, else the decoded prompt."""
    for m in reversed(messages or []):
        if m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return policy_tok.decode(prompt_ids, skip_special_tokens=True)
