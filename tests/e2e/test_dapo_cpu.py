"""DAPO through the entry point on the CPU: examples/dapo_cpu.sh (verl's DAPO recipe keys: clip-higher, dynamic
sampling on `acc`, token-mean loss, the `dapo` reward manager's overlong penalty) for two steps on a tiny model.
About 40 s on two cores."""

import os
import subprocess
import sys

import pytest

from tests.e2e.helpers import env, read_metrics

pytestmark = pytest.mark.slow

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "dapo_cpu.sh")


def test_dapo_recipe_runs_with_the_overlong_penalty_in_the_metrics(tiny_model_dir, tmp_path):
    e = env()
    e.update(PYTHON=sys.executable, MODEL_PATH=str(tiny_model_dir), WORK_DIR=str(tmp_path))
    result = subprocess.run(["bash", SCRIPT], env=e, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    assert "dynamic sampling: rounds of data.gen_batch_size 6 prompts" in result.stdout
    rows = read_metrics(tmp_path / "ckpt" / "logs")
    for step in (1, 2):
        m = rows[step]
        # every sampled response's score is the scorer's acc plus its overlong penalty (penalty_factor 0.5)
        assert -0.5 <= m["reward_extra/overlong_reward/min"] <= m["reward_extra/overlong_reward/max"] <= 0.0
        assert m["reward_extra/overlong/mean"] > 0  # a random model rarely stops before the buffer
        assert m["train/generated_score_mean"] == pytest.approx(
            m["reward_extra/score/mean"] + m["reward_extra/overlong_reward/mean"], abs=1e-6)
        assert m["critic/score/min"] < 0  # the penalty reached the trained rewards
        assert m["train/num_gen_batches"] >= 1 and "actor/pg_clipfrac" in m
        assert m["critic/advantages/max"] > 0 > m["critic/advantages/min"]
    assert "val-aux/strive/arithmetic/overlong_reward/mean@1" in rows[2]
