"""`calc_gsm8k_reward` follows verl's Gsm8kTool: flexible scoring, -0.05 for a non-improved answer."""

import asyncio

from strive.agent.tools.gsm8k import NON_IMPROVED_PENALTY, Gsm8kTool, score_submission


def run(coro):
    return asyncio.run(coro)


def test_score_submission_flexible_and_prefix():
    assert score_submission("72", "72") == ("72", 1.0)
    assert score_submission("#### 72", "72") == ("#### 72", 1.0)
    assert score_submission(72, "72") == ("72", 1.0)          # verl str()s a non-string answer
    assert score_submission("The answer is 72", "72")[1] == 1.0  # flexible: the last number
    assert score_submission("71", "72")[1] == 0.0
    assert score_submission("", "72")[1] == 0.0
    assert score_submission("1,000", "1000")[1] == 0.0        # flexible keeps commas, as verl
    assert score_submission("72", None)[1] == 0.0


def test_step_rewards_follow_the_non_improved_rule():
    tool = Gsm8kTool()

    async def episode():
        iid = await tool.create(create_kwargs={"ground_truth": "72"})
        steps = []
        for answer in ("70", "72", "72", "70"):
            text, reward, _ = await tool.execute(iid, {"answer": answer})
            steps.append((text, reward, await tool.calc_reward(iid)))
        await tool.release(iid)
        return steps, iid

    steps, iid = run(episode())
    assert steps[0] == ("Current parsed answer='70' reward=0.0", NON_IMPROVED_PENALTY, 0.0)
    assert steps[1] == ("Current parsed answer='72' reward=1.0", 0.0, 1.0)
    assert steps[2][1:] == (NON_IMPROVED_PENALTY, 1.0)   # the same right answer again does not improve
    assert steps[3][1:] == (NON_IMPROVED_PENALTY, 0.0)   # and a wrong one replaces the stored reward, as verl
    assert iid not in tool._attempts


def test_ground_truth_as_plain_keyword_and_default_schema():
    tool = Gsm8kTool({"type": "native"})
    assert tool.name == "calc_gsm8k_reward"
    assert tool.tool_schema.function.required == ("answer",)

    async def once():
        iid = await tool.create("row-0", ground_truth="18")
        return await tool.execute(iid, {"answer": "#### 18"}), await tool.calc_reward("row-0")

    (text, reward, _), final = run(once())
    assert (reward, final) == (0.0, 1.0) and "reward=1.0" in text
