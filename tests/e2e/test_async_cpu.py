"""Split placement and asynchronous training through the entry point, on the CPU: one rollout worker process and
one trainer process (actor_rollout_ref.hybrid_engine=False, rollout.n_gpus_per_node=1, trainer.n_gpus_per_node=1),
weights broadcast over a gloo group of their own (strive/controller/transfer.py).

- GRPO on SmolLM2-135M-Instruct for 3 steps at trainer.max_staleness 0, 1 and 2: the run completes and logs the
  staleness, generation-wait and weight-transfer metrics, each batch exactly min(step - 1, bound) versions old;
- split placement at staleness 0 trains exactly what the colocated default trains (same rewards and losses), and
  the default logs none of the async metrics;
- a rollout process killed at a weight transfer, or one that never joins it, ends the run within 60 s with an
  error naming the transfer ranks;
- partial rollout (async_training.partial_rollout): a generation still in flight when the trainer pushes stops and
  goes on under the new weights, so its batch is newer than one-step-off would make it.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.e2e.helpers import env, read_metrics, train_command, write_reward

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=32, n_test=4, seed=0)
    return out


@pytest.fixture(scope="module")
def smollm2():
    from strive.models.fetch import is_cached, model_dir

    if not is_cached("smollm2-135m-instruct"):
        pytest.skip("SmolLM2-135M-Instruct is not cached (strive models fetch smollm2-135m-instruct)")
    return model_dir("smollm2-135m-instruct")


def grpo(model, data, ckpt, reward, *extra: str) -> list[str]:
    """GRPO, 2 prompts × 2 responses of ≤ 8 tokens, 3 steps, one trainer process."""
    return [
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=2", "data.max_prompt_length=192", "data.max_response_length=8",
        "actor_rollout_ref.rollout.name=hf", f"actor_rollout_ref.model.path={model}",
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.optim.lr=1e-5",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "trainer.logger=['console','file']", "trainer.val_before_train=False", "trainer.test_freq=-1",
        "trainer.save_freq=-1", "trainer.n_gpus_per_node=1", "trainer.nnodes=1", "trainer.total_training_steps=3",
        "trainer.device=cpu", "trainer.plot_curves=False", f"trainer.default_local_dir={ckpt}",
        f"custom_reward_function.path={reward}", *extra,
    ]


SPLIT = ("actor_rollout_ref.hybrid_engine=False", "rollout.n_gpus_per_node=1", "rollout.nnodes=1")


def run(overrides, tmp_path, timeout=900, **extra_env) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(overrides), cwd=tmp_path, env={**env(), **extra_env}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.parametrize("staleness", [0, 1, 2])
def test_split_placement_bounded_staleness(smollm2, data_dir, tmp_path, staleness):
    ckpt = tmp_path / "ckpt"
    result = run(grpo(smollm2, data_dir, ckpt, write_reward(tmp_path), *SPLIT,
                      f"trainer.max_staleness={staleness}"), tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    assert "placement rollout: rank 0" in result.stdout and "placement trainer: rank 0" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert sorted(rows) == [1, 2, 3]
    for step in (1, 2, 3):
        row = rows[step]
        assert row["async/staleness_max"] == min(step - 1, staleness), (step, row["async/staleness_max"])
        assert row["async/policy_version"] == step - 1 - min(step - 1, staleness)
        for key in ("timing_s/gen_wait", "timing_s/gen", "timing_s/weight_transfer", "perf/weight_transfer_gb",
                    "actor/pg_loss", "critic/score/mean"):
            assert key in row, (step, key)
        assert row["perf/weight_transfer_gb"] > 0.1  # 135M parameters cross the broadcast every step


def test_default_colocated_is_unchanged_and_equals_split_at_staleness_zero(tiny_model_dir, data_dir, tmp_path):
    reward = write_reward(tmp_path)
    colocated = run(grpo(tiny_model_dir, data_dir, tmp_path / "a", reward), tmp_path)
    split = run(grpo(tiny_model_dir, data_dir, tmp_path / "b", reward, *SPLIT, "trainer.max_staleness=0"), tmp_path)
    for result in (colocated, split):
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    assert "placement actor_rollout_ref: rank 0" in colocated.stdout and "split placement" not in colocated.stdout
    a, b = read_metrics(tmp_path / "a" / "logs"), read_metrics(tmp_path / "b" / "logs")
    assert not any(k.startswith("async/") or k == "timing_s/weight_transfer" for k in a[1])
    for step in (1, 2, 3):
        for key in ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "response_length/mean"):
            assert a[step][key] == pytest.approx(b[step][key], rel=1e-6, abs=1e-9), (step, key)


@pytest.mark.parametrize("fault", ["kill", "hang"])
def test_lost_rollout_process_at_weight_transfer_is_a_clear_error(tiny_model_dir, data_dir, tmp_path, fault):
    """The rollout process dies (kill) or never joins (hang) at the second transfer (the first follows start-up);
    the run must end within 60 s of the fault with an error naming the ranks."""
    overrides = grpo(tiny_model_dir, data_dir, tmp_path / "ckpt", write_reward(tmp_path), *SPLIT,
                     "trainer.phase_timeout_s=20", "trainer.weight_transfer_timeout_s=10")
    proc = subprocess.Popen(train_command(overrides), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**env(), "STRIVE_FAULT_INJECT": f"phase:receive_weights:rank:0:call:2:{fault}"})
    lines, fault_at = [], None
    for line in proc.stdout:  # ends when the run's output does
        lines.append(line)
        if fault_at is None and "STRIVE_FAULT_INJECT:" in line:
            fault_at = time.monotonic()
    rc = proc.wait(timeout=120)
    ended, out = time.monotonic(), "".join(lines)
    assert rc != 0 and fault_at is not None, out[-4000:]
    assert ended - fault_at < 60, (ended - fault_at, out[-2000:])
    assert "WeightTransferError: weight transfer of policy version 1" in out, out[-4000:]
    assert "transfer rank 1" in out
    if fault == "kill":
        assert "rollout rank 0 (transfer rank 1) died" in out
    else:
        assert "not every rollout rank joined within 20 s (trainer.phase_timeout_s); missing: rollout rank 0 (transfer rank 1)" in out


def test_partial_rollout_moves_a_late_generation_to_the_new_weights(tiny_model_dir, data_dir, tmp_path):
    """Step 2's generation (the rollout process's second generate_ahead) starts 15 s late, long after the trainer
    began pushing version 1: with partial rollout it stops before it starts and runs after the push, under
    version 1 (staleness 0); without it, the push would wait for it and it would be version 0's (staleness 1)."""
    ckpt = tmp_path / "ckpt"
    result = run(grpo(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path), *SPLIT, "trainer.max_staleness=1",
                      "async_training.partial_rollout=True", "async_training.partial_rollout_chunk=2"),
                 tmp_path, STRIVE_FAULT_INJECT="phase:generate_ahead:rank:0:call:2:sleep:15")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-4000:]
    assert "partial rollout: a weight push interrupts the generations in flight" in result.stdout
    rows = read_metrics(ckpt / "logs")
    assert rows[1]["async/policy_version"] == 0 and rows[1]["async/staleness_max"] == 0
    assert rows[2]["async/policy_version"] == 1 and rows[2]["async/staleness_max"] == 0
    assert rows[2]["async/token_staleness_mean"] == 0
    assert rows[3]["async/staleness_max"] <= 1
    for step in (1, 2, 3):  # the hf engine stops in place: one call, and one more after a push stopped it
        assert 1 <= rows[step]["async/partial_engine_calls"] <= 2
        assert "async/partial_interrupted_frac" in rows[step]
    assert rows[2]["async/partial_engine_calls"] == 1  # stopped before it began: one call, after the push


def test_resume_with_generations_in_flight_draws_their_prompts_again(tiny_model_dir, data_dir, tmp_path):
    """One-step-off, killed after the checkpoint of step 2 (step 3's generation was in flight then): the resumed run
    trains steps 3 and 4 on the prompts an uninterrupted run trains on, none skipped."""
    import json

    from tests.e2e.test_resume_cpu import _kill_after_checkpoint

    reward = write_reward(tmp_path)

    def overrides(name):
        return [o for o in grpo(tiny_model_dir, data_dir, tmp_path / name, reward, *SPLIT, "trainer.max_staleness=1",
                                "trainer.save_freq=2", f"trainer.rollout_data_dir={tmp_path / name / 'dump'}",
                                "trainer.total_training_steps=4")
                if o not in ("trainer.save_freq=-1", "trainer.total_training_steps=3")]

    def prompts(name, step):
        with open(tmp_path / name / "dump" / f"{step}.jsonl") as fh:
            return [json.loads(line)["input"] for line in fh]

    straight = run(overrides("straight"), tmp_path)
    assert straight.returncode == 0, straight.stdout[-3000:] + straight.stderr[-4000:]
    _kill_after_checkpoint(train_command(overrides("resumed")), tmp_path,
                           tmp_path / "resumed" / "latest_checkpointed_iteration.txt", 2)
    resumed = run(overrides("resumed"), tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout and "global_step_2" in resumed.stdout
    for step in (3, 4):
        assert prompts("resumed", step) == prompts("straight", step), step
    assert prompts("straight", 3) != prompts("straight", 2)  # the steps' prompts differ, so this can fail
