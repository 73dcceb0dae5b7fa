"""Killing a run after a checkpoint and starting it again gives the same data order and metrics as a run
that was never interrupted (CPU, Ray, two FSDP2 ranks, tiny model)."""

import os
import signal
import subprocess
import time

import pytest

from tests.e2e.helpers import env, read_metrics, run_training, train_command, write_reward
from tests.e2e.test_ppo_cpu import seed_command

pytestmark = pytest.mark.slow

COMPARED = ("critic/score/mean", "critic/score/max", "response_length/mean", "actor/pg_loss", "actor/entropy",
            "critic/vf_loss", "critic/values/mean", "critic/advantages/mean", "prompt_length/mean", "actor/grad_norm",
            "val-core/strive/arithmetic/reward/mean@1")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=64, n_test=4, seed=1)
    return out


def _overrides(model, data, ckpt, reward):
    return seed_command(model, data, ckpt, reward) + ["trainer.total_training_steps=4", "trainer.save_freq=2",
                                                      "trainer.test_freq=2", "data.train_batch_size=4",
                                                      "actor_rollout_ref.actor.ppo_mini_batch_size=2"]


def _kill_after_checkpoint(cmd, cwd, tracker, step: int, timeout: float = 600) -> None:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            if tracker.exists() and tracker.read_text().strip() == str(step):
                break
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (code {proc.returncode}) before checkpoint {step}")
            time.sleep(0.2)
        else:
            raise AssertionError("no checkpoint in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_and_resume_matches_uninterrupted_run(tiny_model_dir, data_dir, tmp_path):
    reward = write_reward(tmp_path)
    straight = tmp_path / "straight"
    run_training(_overrides(tiny_model_dir, data_dir, straight, reward), cwd=tmp_path)
    resumed = tmp_path / "resumed"
    overrides = _overrides(tiny_model_dir, data_dir, resumed, reward)
    _kill_after_checkpoint(train_command(overrides), tmp_path, resumed / "latest_checkpointed_iteration.txt", 2)
    result = run_training(overrides, cwd=tmp_path)
    assert "resumed from" in result.stdout and "global_step_2" in result.stdout
    a, b = read_metrics(straight / "logs"), read_metrics(resumed / "logs")
    for step in (3, 4):
        for key in COMPARED:
            if key.startswith("val-") and step != 4:
                continue  # validation runs every 2 steps
            assert key in a[step], key
            assert b[step][key] == pytest.approx(a[step][key], rel=1e-5, abs=1e-6), (step, key)
        assert b[step]["training/epoch"] == a[step]["training/epoch"]
