"""Rollout correction through the entry point on CPU with SmolLM2-135M (the cached offline model): GRPO for two
steps with token-level truncated IS and token-level rejection, then bypass mode with the REINFORCE loss. Checks
that the run finishes and that the rollout_corr/* metrics reach metrics.jsonl.

Run: pytest -q tests/e2e/test_rollout_correction_cpu.py (190 s + 146 s on 2 shared CPU cores)."""

import math

import pytest

from tests.e2e.helpers import read_metrics, run_training, write_reward

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=16, n_test=2, seed=0)
    return out


@pytest.fixture(scope="module")
def model():
    from strive.models import fetch

    if not fetch.is_cached(MODEL):
        pytest.skip(f"{MODEL} is not cached; run `strive models fetch {MODEL}`")
    return MODEL


def grpo_command(model, data, ckpt, reward) -> list[str]:
    return [
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=2", "data.max_prompt_length=160", "data.max_response_length=6",
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.name=hf",
        f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.actor.optim.lr=1e-5",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4", "actor_rollout_ref.actor.use_kl_loss=False",
        "trainer.logger=['console','file']", "trainer.val_before_train=False", "trainer.test_freq=0",
        "trainer.save_freq=0", "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.total_training_steps=2",
        "trainer.device=cpu", "trainer.plot_curves=False", f"trainer.default_local_dir={ckpt}",
        f"custom_reward_function.path={reward}",
    ]


def finite(x) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def test_token_is_and_token_rejection(model, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc = "algorithm.rollout_correction."
    result = run_training(grpo_command(model, data_dir, ckpt, write_reward(tmp_path)) + [
        rc + "rollout_is=token", rc + "rollout_is_threshold=2.0",
        rc + "rollout_rs=token", rc + "rollout_rs_threshold=2.0",
    ], cwd=tmp_path)
    assert "rollout correction: token-level IS weights truncated at 2.0; rejection token at 2.0" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2]
    for step in (1, 2):
        row = rows[step]
        for key in ("rollout_corr/rollout_is_mean", "rollout_corr/rollout_is_max",
                    "rollout_corr/rollout_is_eff_sample_size",
                    "rollout_corr/rollout_rs_masked_fraction", "rollout_corr/rollout_rs_token_k1_masked_fraction",
                    "rollout_corr/kl", "rollout_corr/k3_kl", "rollout_corr/ppl_ratio", "rollout_corr/chi2_token",
                    "rollout_corr/training_ppl", "rollout_corr/rollout_ppl", "actor/pg_loss", "timing_s/old_log_prob"):
            assert finite(row.get(key)), (step, key, row.get(key))
        assert 0.0 <= row["rollout_corr/rollout_rs_masked_fraction"] <= 1.0
        assert 0.0 < row["rollout_corr/rollout_is_mean"] <= 2.0 + 1e-6  # weights of a near-on-policy batch


def test_bypass_mode_reinforce(model, data_dir, tmp_path):
    ckpt = tmp_path / "ckpt"
    rc = "algorithm.rollout_correction."
    result = run_training(grpo_command(model, data_dir, ckpt, write_reward(tmp_path)) + [
        rc + "bypass_mode=True", rc + "loss_type=reinforce", rc + "rollout_is=sequence",
        rc + "rollout_rs=seq_mean_k3", rc + "rollout_rs_threshold=0.01", "trainer.total_training_steps=1",
    ], cwd=tmp_path)
    assert "bypass mode, no old log-prob pass" in result.stdout
    row = read_metrics(ckpt / "logs")[1]
    assert "timing_s/old_log_prob" not in row  # no recompute pass
    for key in ("rollout_corr/rollout_is_mean", "rollout_corr/rollout_rs_seq_mean_k3_masked_fraction",
                "rollout_corr/kl", "actor/pg_loss", "actor/ppo_kl"):
        assert finite(row.get(key)), (key, row.get(key))
    assert "training/rollout_probs_diff_max" not in row  # nothing to compare: the old log-probs are the engine's
