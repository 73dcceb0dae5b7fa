"""Multi-turn GRPO through the entry point on the CPU (tiny model, one step; one worker with the even split, two
with least-loaded routing): verl's multi-turn keys
and tool file are accepted, every sample goes through the tool_agent loop, the agent/* metrics are logged, and the
prompts carry the tool schemas. The tiny random model never writes a tool call; the tool turns themselves are
covered by tests/unit/test_agent_loop.py and by the Qwen run in docs/multiturn.md."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward

pytestmark = pytest.mark.slow

TOOL_FILE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "sglang_multiturn", "config",
                         "tool_config", "gsm8k_tool_config.yaml")


def with_agent_columns(path):
    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["agent_name"] = "tool_agent"
        row["extra_info"] = {**row["extra_info"], "tools_kwargs": {
            "calc_gsm8k_reward": {"create_kwargs": {"ground_truth": str(row["reward_model"]["ground_truth"])}}}}
    pq.write_table(pa.Table.from_pylist(rows), path)


def with_hermes_template(model_dir, tmp_path):
    """A copy of the tiny model whose chat template renders tool schemas (the tiny ChatML one ignores them)."""
    import shutil
    import sys

    from transformers import AutoTokenizer

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
    from agent_templates import HERMES_TEMPLATE

    copy = tmp_path / "tiny-hermes"
    shutil.copytree(model_dir, copy)
    tok = AutoTokenizer.from_pretrained(copy)
    tok.chat_template = HERMES_TEMPLATE
    tok.save_pretrained(copy)
    return copy


SPLIT = ("actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "trainer.max_staleness=1")


@pytest.mark.parametrize("router, workers, split", [("static", 1, False), ("least_loaded", 2, False),
                                                    ("static", 1, True)], ids=["static", "least_loaded", "split"])
def test_multi_turn_grpo_step_through_the_entry_point(tiny_model_dir, tmp_path, router, workers, split):
    """split: the episodes run on a rollout process of their own, one step ahead of the trainer (docs/async.md)."""
    from strive.data.synthetic import write_dataset

    model = with_hermes_template(tiny_model_dir, tmp_path)
    write_dataset(str(tmp_path / "data"), n_train=8, n_test=2, seed=3)
    data = tmp_path / "data"
    with_agent_columns(data / "train.parquet")
    result = run_training([
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=4", "data.max_prompt_length=768", "data.max_response_length=16",
        "data.return_raw_chat=True", f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "algorithm.adv_estimator=grpo",
        "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.mode=async",
        "actor_rollout_ref.rollout.multi_turn.enable=True", "actor_rollout_ref.rollout.multi_turn.max_assistant_turns=2",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={TOOL_FILE}",
        f"actor_rollout_ref.rollout.multi_turn.router={router}",
        f"trainer.n_gpus_per_node={workers}", "trainer.device=cpu", "trainer.logger=['console','file']",
        f"trainer.total_training_steps={2 if split else 1}", "trainer.plot_curves=False",
        "trainer.val_before_train=False", *(SPLIT if split else ()),
        f"trainer.rollout_data_dir={tmp_path / 'rollouts'}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}", f"custom_reward_function.path={write_reward(tmp_path)}"],
        cwd=tmp_path)
    out = result.stdout
    assert "multi-turn rollouts: default loop single_turn_agent, tools [calc_gsm8k_reward]" in out
    rows = read_metrics(tmp_path / "ckpt" / "logs")
    metrics = rows[1]
    if split:
        assert "placement rollout: rank 0" in out
        assert rows[2]["async/staleness_max"] == 1 and rows[2]["agent/num_turns/min"] >= 2
    assert metrics["agent/num_turns/min"] >= 2  # the prompt and at least one assistant turn, per episode
    assert metrics["agent/tool_calls/total"] >= 0 and "agent/tool_errors/total" in metrics
    assert metrics["agent/assistant_turns/max"] <= 2
    with open(tmp_path / "rollouts" / "1.jsonl") as fh:
        first = json.loads(fh.readline())
    assert '"name": "calc_gsm8k_reward"' in first["input"]  # the prompt was rendered with the tool schemas
