"""The agent loops over a scripted engine: tool calls run, tool turns are masked, the engine's ids are trained
byte for byte, bad calls are answered and counted, limits end episodes, and the batch the trainer gets."""

import random

import pytest
import torch

from agent_templates import HERMES_TEMPLATE, tokenizer_with
from test_agent_trajectory import runs
from strive.agent.chat_template import MessageEncoder
from strive.agent.loop import SINGLE_TURN, TOOL_AGENT, AgentRequest, AgentRunner, episode_stats
from strive.agent.tool_runner import ToolCallLimits
from strive.agent.tools.gsm8k import Gsm8kTool
from strive.agent.trajectory import MAX_ASSISTANT_TURNS, NO_TOOL_CALL, TurnLimits
from strive.engines.base import Completion, SamplingParams
from strive.workers.rollout import trajectories_to_batch


def call(answer) -> str:
    return f'<tool_call>\n{{"name": "calc_gsm8k_reward", "arguments": {{"answer": {answer}}}}}\n</tool_call>'


SCRIPTS = {  # the question's marker -> the assistant's turns, in order
    "Q-tool": ["Let me check.\n" + call('"5"'), "Once more.\n" + call('"4"'), "So it is 4.\n#### 4"],
    "Q-direct": ["#### 4"],
    "Q-badjson": ['<tool_call>\n{"name": "calc_gsm8k_reward", "arguments": {answer: 4}\n</tool_call>', "#### 4"],
    "Q-unknown": ['<tool_call>\n{"name": "calculator", "arguments": {"x": "1"}}\n</tool_call>', "#### 4"],
    "Q-loop": [call('"1"')] * 10,
}


class ScriptedEngine:
    """Plays the script of the question in the prompt: the k-th assistant turn of a conversation is the script's
    k-th text, encoded, ending with <|im_end|>; log-probs are random (recorded to check alignment)."""

    def __init__(self, tokenizer):
        self.tok, self.rng = tokenizer, random.Random(0)
        self.end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.outputs: dict[str, list[Completion]] = {}
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        outs = []
        for ids in prompts:
            text = self.tok.decode(ids)
            marker = next(m for m in SCRIPTS if m in text)
            turn = text.count("<|im_start|>assistant") - 1
            out_ids = self.tok.encode(SCRIPTS[marker][turn], add_special_tokens=False) + [self.end]
            out_ids = out_ids[: params.max_new_tokens]
            done = out_ids[-1] == self.end
            comp = Completion(out_ids, [-self.rng.random() for _ in out_ids], "stop" if done else "length")
            self.outputs.setdefault(marker, []).append(comp)
            outs.append(comp)
        return outs


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_with(HERMES_TEMPLATE)


def runner(tokenizer, response_length=400, max_assistant_turns=None, **call_kwargs):
    engine = ScriptedEngine(tokenizer)
    tools = {"calc_gsm8k_reward": Gsm8kTool({"type": "native"})}
    agent = AgentRunner(engine, tokenizer, tools, TurnLimits(response_length, max_assistant_turns=max_assistant_turns),
                        ToolCallLimits(**call_kwargs))
    return agent, engine


def request(agent, marker, loop=TOOL_AGENT, ground_truth="4"):
    messages = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": f"{marker}: 2 + 2?"}]
    return AgentRequest(agent.encoder.prompt_ids(messages), loop,
                        {"calc_gsm8k_reward": {"create_kwargs": {"ground_truth": ground_truth}}})


def test_tool_agent_calls_the_tool_and_trains_exactly_the_engine_ids(tokenizer):
    agent, engine = runner(tokenizer)
    [ep] = agent.run([request(agent, "Q-tool")], SamplingParams(max_new_tokens=1, seed=3))
    traj = ep.trajectory
    sent = engine.outputs["Q-tool"]
    assert len(sent) == 3 and engine.calls == 3
    assert runs(traj.response_mask, traj.response_ids, 1) == [c.token_ids for c in sent]  # byte for byte
    assert runs(traj.response_mask, traj.response_logprobs, 1) == [c.logprobs for c in sent]
    tool_text = [tokenizer.decode(ids) for ids in runs(traj.response_mask, traj.response_ids, 0)]
    assert "Current parsed answer='5' reward=0.0" in tool_text[0] and "<tool_response>" in tool_text[0]
    assert "Current parsed answer='4' reward=1.0" in tool_text[1]
    assert all(lp == 0.0 for m, lp in zip(traj.response_mask, traj.response_logprobs) if m == 0)
    assert (ep.tool_calls, ep.tool_errors, traj.num_turns, traj.stop_reason) == (2, 0, 6, NO_TOOL_CALL)
    assert ep.tool_rewards == {"calc_gsm8k_reward": 1.0}


def test_the_trajectory_is_the_templates_rendering_of_the_conversation(tokenizer):
    agent, _ = runner(tokenizer)
    req = request(agent, "Q-tool")
    [ep] = agent.run([req], SamplingParams(max_new_tokens=1))
    messages = [{"role": "system", "content": "Use the tool."}, {"role": "user", "content": "Q-tool: 2 + 2?"}]
    for text, tool in zip(SCRIPTS["Q-tool"], ["Current parsed answer='5' reward=0.0",
                                               "Current parsed answer='4' reward=1.0", None]):
        messages.append({"role": "assistant", "content": text})
        if tool:
            messages.append({"role": "tool", "content": tool})
    whole = agent.encoder.ids(messages, add_generation_prompt=False)
    assert ep.trajectory.input_ids + agent.encoder.closing_ids[1:] == whole


@pytest.mark.parametrize("marker, kind", [("Q-badjson", "not valid JSON"), ("Q-unknown", "calculator")])
def test_a_bad_call_is_answered_and_counted_and_the_episode_goes_on(tokenizer, marker, kind):
    agent, _ = runner(tokenizer)
    [ep] = agent.run([request(agent, marker)], SamplingParams(max_new_tokens=1))
    traj = ep.trajectory
    tool_text = tokenizer.decode(runs(traj.response_mask, traj.response_ids, 0)[0])
    assert "Error" in tool_text and kind in tool_text
    assert (ep.tool_calls, ep.tool_errors, traj.assistant_turns, traj.stop_reason) == (1, 1, 2, NO_TOOL_CALL)


def test_turn_and_length_limits_end_an_episode(tokenizer):
    agent, _ = runner(tokenizer, response_length=4000, max_assistant_turns=3)
    [ep] = agent.run([request(agent, "Q-loop")], SamplingParams(max_new_tokens=1))
    assert (ep.trajectory.assistant_turns, ep.trajectory.stop_reason, ep.tool_calls) == (3, MAX_ASSISTANT_TURNS, 2)
    short, _ = runner(tokenizer, response_length=60)
    [ep] = short.run([request(short, "Q-loop")], SamplingParams(max_new_tokens=1))
    assert len(ep.trajectory.response_ids) <= 60 and ep.trajectory.done


def test_many_episodes_share_turns_and_keep_their_order(tokenizer):
    agent, engine = runner(tokenizer)
    markers = ["Q-tool", "Q-direct", "Q-unknown", "Q-tool"]
    loops = [TOOL_AGENT, TOOL_AGENT, TOOL_AGENT, SINGLE_TURN]
    eps = agent.run([request(agent, m, loop) for m, loop in zip(markers, loops)], SamplingParams(max_new_tokens=1))
    assert [e.trajectory.assistant_turns for e in eps] == [3, 1, 2, 1]
    assert engine.calls == 3  # turn 1: four requests, turn 2: two, turn 3: one
    assert eps[3].tool_calls == 0  # single_turn_agent never runs tools, even when the text holds a call
    stats = episode_stats(eps)
    assert stats["num_turns"] == [6.0, 2.0, 4.0, 2.0] and stats["tool_errors"] == [0.0, 0.0, 1.0, 0.0]


def test_an_unknown_agent_name_is_refused_before_anything_runs(tokenizer):
    agent, engine = runner(tokenizer)
    with pytest.raises(ValueError, match="'react_agent' is not an agent loop"):
        agent.run([request(agent, "Q-direct", "react_agent")], SamplingParams(max_new_tokens=1))
    assert engine.calls == 0


def test_the_trainers_batch_masks_tool_turns_and_keeps_every_token_attended(tokenizer):
    agent, _ = runner(tokenizer)
    eps = agent.run([request(agent, "Q-tool"), request(agent, "Q-direct")], SamplingParams(max_new_tokens=1))
    trajs = [e.trajectory for e in eps]
    P, T = 600, 400
    batch = trajectories_to_batch(trajs, P, T, pad_id=0)
    for i, traj in enumerate(trajs):
        R = len(traj.response_ids)
        assert batch.prompts[i, P - len(traj.prompt_ids):].tolist() == traj.prompt_ids
        assert batch.responses[i, :R].tolist() == traj.response_ids
        assert batch.response_mask[i, :R].tolist() == [float(m) for m in traj.response_mask]
        assert batch.response_mask[i, R:].sum() == 0
        assert batch.response_valid[i].sum() == R  # tool tokens are attended, padding is not
        assert torch.allclose(batch.rollout_log_probs[i, :R], torch.tensor(traj.response_logprobs))
    assert batch.response_mask[0].sum() < batch.response_valid[0].sum()  # the tool turns are in, unmasked
    assert torch.equal(batch.response_mask[1], batch.response_valid[1].float())  # one turn: the same
    with pytest.raises(ValueError, match="prompt_length=10"):
        trajectories_to_batch(trajs, 10, T, pad_id=0)


def test_the_encoder_renders_the_tool_schemas_into_the_prompt(tokenizer):
    agent, _ = runner(tokenizer)
    assert isinstance(agent.encoder, MessageEncoder)
    prompt = tokenizer.decode(request(agent, "Q-direct").prompt_ids)
    assert '"name": "calc_gsm8k_reward"' in prompt


def test_turn_progress_prints_at_most_every_interval():
    from strive.agent.loop import TurnProgress

    now, lines = [0.0], []
    progress = TurnProgress(8, every_s=30, clock=lambda: now[0], write=lines.append)
    for t, open_ in ((10, 8), (31, 6), (40, 5), (70, 2)):
        now[0] = t
        progress.turn(4, open_)
    assert lines == ["[strive] agent rollout: 2 turn(s) in 31 s, last one 4 request(s); 6/8 episodes open",
                     "[strive] agent rollout: 4 turn(s) in 70 s, last one 4 request(s); 2/8 episodes open"]
