"""Faults around checkpoints, injected into real runs through `python -m strive.trainer.main_ppo` (CPU, Ray, FSDP2
on gloo, the hf engine, a tiny Llama, GRPO): a crafted data.pt, a checkpoint folder that is gone or half-written,
a missing resume path, a changed world size, and a worker SIGKILLed mid-run under trainer.max_restarts.

The refusals before Ray need no training run (a hand-made folder); the fallback and world-size tests share one 2-step
run with a checkpoint after each step, copy its folder and break it (slow: the shared run plus their own).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch

from tests.e2e.helpers import env, read_metrics, run_training, train_command, write_reward

# Metrics that measure time or memory differ between any two runs; everything else must match exactly.
VOLATILE = ("timing_s/", "timing_per_token_ms/", "perf/", "weight_sync/time_s", "weight_sync/gb_per_s")


class WritesMarker:
    """Unpickling this calls open(path, "w"): code a crafted checkpoint runs (it could as well be os.system)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture(scope="module", autouse=True)
def own_cluster():
    """Each run starts a Ray cluster of its own, so a test never joins another run's cluster on a shared machine
    (the restart test shuts its cluster down mid-run)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ADDRESS", "local")
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("arith")
    write_dataset(str(out), n_train=32, n_test=4, seed=1)
    return out


def grpo(model, data, ckpt, reward, steps: int, slots: int = 2, *extra: str) -> list[str]:
    return [f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
            "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=8",
            "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.rollout.name=hf",
            "actor_rollout_ref.rollout.tensor_model_parallel_size=1", f"actor_rollout_ref.model.path={model}",
            "actor_rollout_ref.actor.optim.lr=1e-4", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4", "trainer.logger=['console','file']",
            "trainer.val_before_train=False", "trainer.test_freq=2", f"trainer.n_gpus_per_node={slots}",
            "trainer.nnodes=1", "trainer.device=cpu", "trainer.plot_curves=False", "trainer.save_freq=1",
            f"trainer.total_training_steps={steps}", f"trainer.default_local_dir={ckpt}",
            f"custom_reward_function.path={reward}", *extra]


@pytest.fixture(scope="module")
def base(tiny_model_dir, data_dir, tmp_path_factory):
    """Two steps on two slots, a checkpoint after each; validation after step 2."""
    work = tmp_path_factory.mktemp("base")
    reward = write_reward(work)
    run_training(grpo(tiny_model_dir, data_dir, work / "ckpt", reward, 2), cwd=work)
    return {"model": tiny_model_dir, "data": data_dir, "reward": reward, "ckpt": work / "ckpt"}


def _copy(base, tmp_path):
    shutil.copytree(base["ckpt"], tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _run_failing(overrides, cwd) -> tuple[subprocess.CompletedProcess, float]:
    start = time.time()
    result = subprocess.run(train_command(overrides), cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    return result, time.time() - start


def _same(a: dict, b: dict) -> list[str]:
    """The keys of two metric rows whose values differ (time and memory left out)."""
    keys = {k for k in a if not k.startswith(VOLATILE)}
    return sorted(k for k in keys if b.get(k) != a[k])


def _marked(ckpt, step: int) -> None:
    """A folder that passes for a complete checkpoint up to its .pt files (the checks before Ray look no further)."""
    os.makedirs(ckpt / f"global_step_{step}" / "actor")
    (ckpt / f"global_step_{step}" / "strive_checkpoint.json").write_text(f'{{"step": {step}, "world_size": 2}}')
    (ckpt / "latest_checkpointed_iteration.txt").write_text(str(step))


def test_crafted_data_pt_is_refused_before_ray(tiny_model_dir, data_dir, tmp_path):
    ckpt, marker = tmp_path / "ckpt", tmp_path / "code_ran"
    _marked(ckpt, 2)
    torch.save({"global_step": 2, "x": WritesMarker(str(marker))}, ckpt / "global_step_2" / "data.pt")
    result, seconds = _run_failing(grpo(tiny_model_dir, data_dir, ckpt, write_reward(tmp_path), 3), tmp_path)
    assert result.returncode == 1, result.stdout[-2000:]
    assert f"{ckpt}/global_step_2/data.pt holds objects other than tensors" in result.stderr
    assert "(io.open)" in result.stderr  # the global it names
    assert "placement" not in result.stdout  # refused before Ray and the workers started
    assert not marker.exists()
    print(f"refused in {seconds:.1f}s")


@pytest.mark.slow
def test_auto_resume_falls_back_past_a_gone_and_a_half_written_folder(base, tmp_path):
    """The tracker names step 2, whose folder is gone; a killed save left global_step_3.partial (the unit test
    tests/unit/test_checkpoint_files.py makes one by crashing a real save). The run must resume from step 1 and
    redo step 2 exactly."""
    ckpt = _copy(base, tmp_path)
    shutil.copytree(ckpt / "global_step_2", ckpt / "global_step_3.partial")
    os.remove(ckpt / "global_step_3.partial" / "strive_checkpoint.json")
    shutil.rmtree(ckpt / "global_step_2")
    before = read_metrics(base["ckpt"] / "logs")
    shutil.rmtree(ckpt / "logs")
    result = run_training(grpo(base["model"], base["data"], ckpt, base["reward"], 2), cwd=tmp_path)
    assert f"{ckpt}/global_step_3.partial is a half-written checkpoint" in result.stdout
    assert "names step 2, whose folder is gone; resuming from the newest complete checkpoint" in result.stdout
    assert f"resumed from {ckpt}/global_step_1 at step 1" in result.stdout
    after = read_metrics(ckpt / "logs")
    assert sorted(after) == [2]
    assert _same(before[2], after[2]) == []
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text() == "2"


def test_resume_path_that_is_missing_or_incomplete_stops_before_ray(tiny_model_dir, data_dir, tmp_path):
    ckpt, reward = tmp_path / "ckpt", write_reward(tmp_path)
    _marked(ckpt, 2)
    os.remove(ckpt / "global_step_2" / "strive_checkpoint.json")
    (ckpt / "latest_checkpointed_iteration.txt").write_text("1")  # as if the save of step 2 never finished
    for target, error in (("global_step_2", "is an incomplete checkpoint"), ("global_step_7", "does not exist")):
        overrides = grpo(tiny_model_dir, data_dir, ckpt, reward, 3, 2, "trainer.resume_mode=resume_path",
                         f"trainer.resume_from_path={ckpt}/{target}")
        result, seconds = _run_failing(overrides, tmp_path)
        assert result.returncode == 1 and error in result.stderr, result.stderr[-2000:]
        assert "placement" not in result.stdout
        print(f"{target}: refused in {seconds:.1f}s")


@pytest.mark.slow
def test_two_slot_checkpoint_resumes_on_one_slot(base, tmp_path):
    """The shards are re-cut. With optim.lr=0 the one-slot run's step 3 leaves the weights as it found them, so
    its checkpoint must equal the two-slot step 2 bit for bit, and its optimizer's step count must go on from the
    loaded one; its greedy validation right after resuming scores what the two-slot run's after step 2 did."""
    from strive.trainer.merge import merged_state_dict

    ckpt = _copy(base, tmp_path)
    shutil.rmtree(ckpt / "logs")
    overrides = grpo(base["model"], base["data"], ckpt, base["reward"], 3, 1, "trainer.val_before_train=True",
                     "actor_rollout_ref.actor.optim.lr=0")
    result = run_training(overrides, cwd=tmp_path)
    assert "was written by 2 ranks and this run has 1" in result.stdout
    assert f"resumed from {ckpt}/global_step_2 at step 2" in result.stdout
    saved, resumed = (merged_state_dict(str(d / "actor")) for d in (base["ckpt"] / "global_step_2",
                                                                    ckpt / "global_step_3"))
    assert saved.keys() == resumed.keys() and all(torch.equal(saved[k], resumed[k]) for k in saved)
    counts = [{float(s["step"]) for s in torch.load(f, weights_only=True)["state"].values()} for f in
              (base["ckpt"] / "global_step_2" / "actor" / "optim_world_size_2_rank_0.pt",
               ckpt / "global_step_3" / "actor" / "optim_world_size_1_rank_0.pt")]
    (two_steps,), (three_steps,) = counts  # optimizer steps: the same count for every parameter
    assert three_steps == two_steps * 3 / 2  # the loaded count went on (a fresh optimizer would hold half)
    before, after = read_metrics(base["ckpt"] / "logs"), read_metrics(ckpt / "logs")
    key = "val-core/strive/arithmetic/reward/mean@1"
    assert after[2][key] == pytest.approx(before[2][key], abs=1e-6)


def _worker_pids(root: int) -> list[int]:
    import psutil

    pids = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if "WorkerProcess" in " ".join(p.cmdline()):
                pids.append(p.pid)
        except psutil.Error:
            pass
    return pids


@pytest.mark.slow
def test_worker_killed_mid_run_restarts_and_ends_like_an_uninterrupted_run(tiny_model_dir, data_dir, tmp_path):
    """6 steps, a checkpoint every 2; one worker SIGKILLed after step 3 is logged (in step 4, whatever phase).
    trainer.max_restarts=1 brings the run back from global_step_2; its step-6 metrics equal the straight run's."""
    model, data, reward = tiny_model_dir, data_dir, write_reward(tmp_path)
    extra = ("trainer.save_freq=2", "trainer.test_freq=-1")
    run_training(grpo(model, data, tmp_path / "straight", reward, 6, 2, *extra), cwd=tmp_path)
    ckpt = tmp_path / "faulted"
    cmd = train_command(grpo(model, data, ckpt, reward, 6, 2, *extra, "trainer.max_restarts=1"))
    log = open(tmp_path / "faulted.log", "w")
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    killed = None
    try:
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline:
            metrics = ckpt / "logs" / "metrics.jsonl"
            if killed is None and metrics.exists() and 3 in read_metrics(ckpt / "logs"):
                pids = _worker_pids(proc.pid)
                if pids:
                    killed = pids[-1]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
    out = (tmp_path / "faulted.log").read_text()
    assert proc.returncode == 0, out[-4000:]
    assert killed is not None
    assert "[strive] restart 1/1 (trainer.max_restarts) after: actor_rollout_ref worker rank" in out
    assert f"resumed from {ckpt}/global_step_" in out
    a, b = read_metrics(tmp_path / "straight" / "logs"), read_metrics(ckpt / "logs")
    assert _same(a[6], b[6]) == []
    assert b[6]["actor/grad_norm"] > 0 and "actor/pg_loss" in b[6]
