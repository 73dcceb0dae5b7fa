"""Trajectory: the engine's ids are trained verbatim, tool/user ids are masked, log-probs align, limits stop it."""

import random

import pytest

from agent_templates import HERMES_TEMPLATE, tokenizer_with
from strive.agent.chat_template import MessageEncoder
from strive.agent.trajectory import (ENGINE_LENGTH, MAX_ASSISTANT_TURNS, MAX_USER_TURNS, NO_TOOL_CALL,
                                     RESPONSE_LENGTH, Trajectory, TurnLimits)

TOOLS = [{"type": "function", "function": {
    "name": "calc_gsm8k_reward", "description": "Score an answer.",
    "parameters": {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}}}]
PROMPT = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "What is 2 + 2?"}]
ASSISTANT_TEXTS = [
    'Let me check.\n<tool_call>\n{"name": "calc_gsm8k_reward", "arguments": {"answer": "5"}}\n</tool_call>',
    'Again.\n<tool_call>\n{"name": "calc_gsm8k_reward", "arguments": {"answer": "4"}}\n</tool_call>',
    "The answer is 4.",
]
TOOL_TEXTS = ["Current parsed answer='5' reward=0.0", "Current parsed answer='4' reward=1.0"]


# What each template writes for a tool message and the next generation prompt, after the engine's <|im_end|>.
TOOL_TURN_TEXT = {
    "hermes": "\n<|im_start|>user\n<tool_response>\n{}\n</tool_response><|im_end|>\n<|im_start|>assistant\n",
    "tiny-chatml": "\n<|im_start|>tool\n{}<|im_end|>\n<|im_start|>assistant\n",
}


@pytest.fixture(scope="module", params=["hermes", "tiny-chatml"])
def encoder(request):
    """The tiny test tokenizer with the hermes-style template, or with its own ChatML template."""
    enc = MessageEncoder(tokenizer_with(HERMES_TEMPLATE if request.param == "hermes" else None), tools=TOOLS)
    enc.name = request.param
    return enc


def engine_turn(tokenizer, text, rng):
    """What an engine returns for one turn: ids ending with the stop token, one log-prob per id."""
    ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    return ids, [-rng.random() * 3 for _ in ids]


def run_three_turns(encoder, limits):
    """Prompt, assistant, tool, assistant, tool, assistant: the trajectory and the engine's turns."""
    rng = random.Random(0)
    traj = Trajectory(encoder.prompt_ids(PROMPT), limits)
    turns = []
    for i, text in enumerate(ASSISTANT_TEXTS):
        ids, logprobs = engine_turn(encoder.tokenizer, text, rng)
        turns.append((ids, logprobs))
        traj.add_assistant(ids, logprobs)
        if traj.done:
            break
        tool = [{"role": "tool", "content": TOOL_TEXTS[i]}] if i < len(TOOL_TEXTS) else None
        if tool and not traj.add_observation(encoder.observation_ids(tool, after=ids)):
            break
    return traj, turns


def runs(mask, values, want):
    """The maximal runs of `values` where `mask == want`, in order."""
    out, cur = [], []
    for m, v in zip(mask, values):
        if m == want:
            cur.append(v)
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def test_engine_ids_are_trained_verbatim_and_tool_ids_masked(encoder):
    traj, turns = run_three_turns(encoder, TurnLimits(response_length=4096))
    traj.finish()
    assert traj.stop_reason == NO_TOOL_CALL and traj.assistant_turns == 3 and traj.user_turns == 2
    assert traj.num_turns == 6  # verl's count: the prompt + 5
    n = len(traj.response_ids)
    assert len(traj.response_mask) == len(traj.response_logprobs) == n
    assert runs(traj.response_mask, traj.response_ids, 1) == [ids for ids, _ in turns]
    assert runs(traj.response_mask, traj.response_logprobs, 1) == [lp for _, lp in turns]
    assert all(lp == 0.0 for m, lp in zip(traj.response_mask, traj.response_logprobs) if m == 0)
    decode = encoder.tokenizer.decode
    masked = [decode(ids) for ids in runs(traj.response_mask, traj.response_ids, 0)]
    assert masked == [TOOL_TURN_TEXT[encoder.name].format(t) for t in TOOL_TEXTS]


def test_trajectory_equals_the_templates_rendering_of_the_whole_chat(encoder):
    traj, _ = run_three_turns(encoder, TurnLimits(response_length=4096))
    chat = list(PROMPT)
    for i, text in enumerate(ASSISTANT_TEXTS):
        chat.append({"role": "assistant", "content": text})
        if i < len(TOOL_TEXTS):
            chat.append({"role": "tool", "content": TOOL_TEXTS[i]})
    full = encoder.ids(chat, add_generation_prompt=False)
    # Everything but the template's "\n" after the last <|im_end|>, which no engine generates.
    assert traj.input_ids == full[:-1] and encoder.tokenizer.decode(full[-1:]) == "\n"


def test_ids_are_never_retokenized(encoder):
    # Ids that do not decode to the canonical tokenization of their text (an id the engine may sample) stay.
    im_start = encoder.tokenizer.convert_tokens_to_ids("<|im_start|>")
    odd = [im_start, 65, 66, im_start, 67]
    traj = Trajectory(encoder.prompt_ids(PROMPT), TurnLimits(response_length=100))
    traj.add_assistant(odd, [-0.5] * 5)
    assert traj.response_ids == odd and traj.response_mask == [1] * 5


def test_observation_after_a_turn_cut_by_the_engine_closes_it(encoder):
    # The turn was cut at max_tokens: the whole closing is appended, masked.
    obs = encoder.observation_ids([{"role": "user", "content": "go on"}], after=[65, 66])  # no <|im_end|>
    assert encoder.tokenizer.decode(obs) == "<|im_end|>\n<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n"


def test_response_length_cuts_the_turn_and_flags_it(encoder):
    rng = random.Random(1)
    ids, logprobs = engine_turn(encoder.tokenizer, ASSISTANT_TEXTS[0], rng)
    traj = Trajectory(encoder.prompt_ids(PROMPT), TurnLimits(response_length=10))
    assert traj.remaining == 10
    traj.add_assistant(ids, logprobs)
    assert traj.response_ids == ids[:10] and traj.response_logprobs == logprobs[:10]
    assert traj.response_mask == [1] * 10 and traj.remaining == 0
    assert traj.truncated and traj.stop_reason == RESPONSE_LENGTH and traj.done
    with pytest.raises(RuntimeError, match="stopped"):
        traj.add_observation([1, 2])


def test_response_length_drops_an_observation_that_fills_it(encoder):
    traj, turns = run_three_turns(encoder, TurnLimits(response_length=len(engine_turn(
        encoder.tokenizer, ASSISTANT_TEXTS[0], random.Random(0))[0]) + 5))
    # The first tool turn does not fit: not appended, the trajectory ends on the assistant's turn, uncut.
    assert len(turns) == 1 and traj.response_ids == turns[0][0] and traj.response_mask == [1] * len(turns[0][0])
    assert traj.stop_reason == RESPONSE_LENGTH and not traj.truncated and traj.user_turns == 0


def test_engine_length_finish_is_flagged():
    traj = Trajectory([1, 2], TurnLimits(response_length=50))
    traj.add_assistant([5, 6, 7], [-1.0, -1.0, -1.0], finish_reason="length")
    assert traj.truncated and traj.stop_reason == ENGINE_LENGTH


@pytest.mark.parametrize("limits, reason, turns", [
    (TurnLimits(4096, max_assistant_turns=2), MAX_ASSISTANT_TURNS, (2, 1)),
    (TurnLimits(4096, max_user_turns=1), MAX_USER_TURNS, (2, 1)),
    (TurnLimits(4096, max_assistant_turns=1, max_user_turns=1), MAX_ASSISTANT_TURNS, (1, 0)),
    (TurnLimits(4096, max_assistant_turns=0, max_user_turns=None), None, (3, 2)),  # 0 means no limit, as in verl
])
def test_turn_limits_stop_after_an_assistant_turn(encoder, limits, reason, turns):
    traj, _ = run_three_turns(encoder, limits)
    assert traj.stop_reason == reason
    assert (traj.assistant_turns, traj.user_turns) == turns
    assert traj.response_mask[-1] == 1  # always ends on the model's tokens


def test_log_probs_are_optional_but_all_or_none():
    traj = Trajectory([1], TurnLimits(100))
    traj.add_assistant([5, 6])
    assert traj.has_logprobs is False and traj.response_logprobs == [0.0, 0.0]
    traj.add_observation([9])
    with pytest.raises(ValueError, match="all|none"):
        traj.add_assistant([7], [-0.1])


def test_misuse_is_refused():
    with pytest.raises(ValueError, match="non-empty prompt"):
        Trajectory([], TurnLimits(10))
    with pytest.raises(ValueError, match="response_length"):
        TurnLimits(0)
    traj = Trajectory([1], TurnLimits(10))
    with pytest.raises(ValueError, match="must follow an assistant turn"):
        traj.add_observation([3])
    with pytest.raises(ValueError, match="3 ids but 2 log-probs"):
        traj.add_assistant([4, 5, 6], [-1.0, -1.0])
    traj.add_assistant([4])
    with pytest.raises(ValueError, match="in a row"):
        traj.add_assistant([5])
