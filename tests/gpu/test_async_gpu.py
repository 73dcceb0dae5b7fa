"""Split placement on one GPU (rollout.share_trainer_gpus): a trainer process and a rollout process share the
card, one-step-off-policy with and without partial rollout, weights crossing through host memory (gloo). The run
completes through the entry point, every batch is within its staleness bound, and the engine's log-probs of the
tokens it sampled stay close to the trainer's on the weights that sampled them."""

import pytest

from tests.e2e.helpers import read_metrics, run_training
from tests.gpu.test_training_gpu import gpu_command

pytestmark = pytest.mark.gpu

SHARED = ["actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "rollout.share_trainer_gpus=True",
          "trainer.max_staleness=1", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4"]


@pytest.mark.parametrize("partial", [False, True], ids=["one_step_off", "partial"])
def test_one_step_off_on_one_shared_gpu(qwen05_dir, token_data, tmp_path, partial):
    ckpt = tmp_path / "ckpt"
    extra = ["async_training.partial_rollout=True", "async_training.partial_rollout_chunk=16"] if partial else []
    cmd = gpu_command(qwen05_dir, token_data, ckpt, 1, steps=3) + SHARED + extra + ["trainer.save_freq=-1",
                                                                                     "trainer.test_freq=-1"]
    result = run_training(cmd, cwd=tmp_path, timeout=900)
    assert "shares its GPU with a trainer process" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2, 3]
    for step in (1, 2, 3):
        row = rows[step]
        assert row["async/staleness_max"] <= min(step - 1, 1)
        assert row["perf/weight_transfer_gb"] > 0.5  # 0.5B parameters in bf16 cross every step
        assert ("async/partial_engine_calls" in row) == partial
    assert rows[1]["training/rollout_logprob_diff_mean"] < 0.05, rows[1]  # same weights at step 1
