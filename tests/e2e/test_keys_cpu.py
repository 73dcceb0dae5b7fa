"""Keys a verl user relies on, in one short real run on CPU (one worker, GRPO, one step): console alone prints
verl's `step:N - key:value` line, trainer.log_val_generations prints validation samples, model.external_lib is
imported in the controller and the worker, actor.optim.clip_grad is taken as grad_clip, and a no-effect key
leaves a start-up note."""

import os
import re

import pytest

from tests.e2e.helpers import run_training, write_reward

pytestmark = pytest.mark.slow

EXT = '''
import os
with open(os.path.join(os.path.dirname(__file__), "imports.txt"), "a") as f:
    f.write(f"{os.getpid()}\\n")
'''


def test_console_only_verbose_val_samples_external_lib(tiny_model_dir, tmp_path, monkeypatch):
    from strive.data.synthetic import write_dataset

    write_dataset(str(tmp_path / "data"), n_train=8, n_test=3, seed=3)
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "strive_e2e_ext.py").write_text(EXT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "ext"), os.environ.get("PYTHONPATH", "")]))
    data = tmp_path / "data"
    result = run_training([
        f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
        "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=8",
        f"actor_rollout_ref.model.path={tiny_model_dir}", "actor_rollout_ref.model.external_lib=strive_e2e_ext",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.optim.clip_grad=0.5",
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=1",
        "trainer.device=cpu", "trainer.logger=['console']", "trainer.log_val_generations=2",
        "trainer.val_before_train=True", "trainer.test_freq=1", "trainer.total_training_steps=1", "trainer.plot_curves=False",
        "actor_rollout_ref.rollout.over_sample_rate=0.1", f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        f"custom_reward_function.path={write_reward(tmp_path)}"], cwd=tmp_path)
    out = result.stdout
    assert "actor_rollout_ref.actor.optim.clip_grad=0.5: used as actor_rollout_ref.actor.grad_clip" in out
    assert "over_sample_rate=0.1 has no effect in strive" in out
    assert re.search(r"^\[step 1/1 \| 100%\] reward ", out, re.M)  # the compact line stays
    line = next(x for x in out.splitlines() if x.startswith("step:1 - "))
    for key in ("critic/score/mean", "actor/pg_loss", "actor/grad_norm", "response_length/mean", "timing_s/step"):
        assert re.search(rf" - {re.escape(key)}:[-\d.e+naif]+( |$)", line), key
    assert re.search(r"^step:0 - val-core/strive/arithmetic/reward/mean@1:", out, re.M)
    assert out.count("val sample 0 (step 0,") == 1 and out.count("val sample 1 (step 1,") == 1
    assert "val sample 2" not in out
    pids = (tmp_path / "ext" / "imports.txt").read_text().split()
    assert len(set(pids)) == 2  # the controller and the one worker process
