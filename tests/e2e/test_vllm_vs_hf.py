"""The same short GRPO run twice through `python -m strive.trainer.main_ppo`, with `rollout.name=hf` and
`rollout.name=vllm`, on the CPU: same seed, same tiny model (float32), engines inside the Ray worker processes.

Greedy validation before training must give the same text, token for token (the trainer's validation dump). After
that the runs sample with different random streams, so their curves can only be alike: the same steps, rewards
close, and in the vllm run the engine's log-probs must match the actor's after every weight sync.
Skipped where vllm is not installed (docs/vllm.md).

    pytest tests/e2e/test_vllm_vs_hf.py -q
"""

import importlib.util
import json

import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")]
STEPS = 3


def grpo_command(engine: str, model: str, data, out, reward: str) -> list[str]:
    return [
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=16", "data.seed=3",
        f"actor_rollout_ref.rollout.name={engine}", f"actor_rollout_ref.model.path={model}",
        "actor_rollout_ref.rollout.dtype=float32", "actor_rollout_ref.rollout.enforce_eager=True",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1", "actor_rollout_ref.rollout.max_num_seqs=32",
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.optim.lr=1e-3", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8", "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16", "actor_rollout_ref.actor.fsdp_config.seed=3",
        "trainer.device=cpu", "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.val_before_train=True",
        f"trainer.total_training_steps={STEPS}", f"trainer.test_freq={STEPS}", "trainer.save_freq=-1",
        "trainer.resume_mode=disable", "trainer.logger=['console','file']", f"trainer.default_local_dir={out}",
        f"trainer.validation_data_dir={out}/val", f"custom_reward_function.path={reward}",
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=64, n_test=6, seed=0)
    return out


def read_dump(path) -> list[tuple[str, str]]:
    with open(path) as fh:
        return [(row["input"], row["output"]) for row in map(json.loads, fh) if row]


def test_vllm_run_matches_hf_run(tiny_model_dir, data_dir, tmp_path):
    reward = write_reward(tmp_path)
    rows = {}
    for engine in ("hf", "vllm"):
        out = tmp_path / engine
        run_training(grpo_command(engine, tiny_model_dir, data_dir, out, reward), cwd=tmp_path, timeout=1200)
        rows[engine] = read_metrics(out / "logs")
    hf_val, vllm_val = read_dump(tmp_path / "hf" / "val" / "0.jsonl"), read_dump(tmp_path / "vllm" / "val" / "0.jsonl")
    assert len(hf_val) == 6 and vllm_val == hf_val  # greedy before training: identical text
    key = "val-core/strive/arithmetic/reward/mean@1"
    assert rows["vllm"][0][key] == pytest.approx(rows["hf"][0][key], abs=1e-6)
    for step in range(1, STEPS + 1):
        hf_row, vllm_row = rows["hf"][step], rows["vllm"][step]
        assert abs(vllm_row["critic/score/mean"] - hf_row["critic/score/mean"]) < 0.15, (step, hf_row, vllm_row)
        assert vllm_row["response_length/mean"] > 0
        # the vllm engine got this step's weights: its log-probs are the actor's (float32 on both sides)
        assert vllm_row["training/rollout_probs_diff_max"] < 1e-3, vllm_row
        assert vllm_row["weight_sync/bytes"] == hf_row["weight_sync/bytes"] > 0
    assert key in rows["vllm"][STEPS] and key in rows["hf"][STEPS]
