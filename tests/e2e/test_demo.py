"""The README's demo, shortened: a real GRPO run of SmolLM2-135M-Instruct (fetched from PyPI) on the CPU with a
fixed seed; the mean reward of its last steps must be clearly above that of its first steps."""

import os
import subprocess
import sys

import pytest

from tests.e2e.helpers import env, read_metrics

pytestmark = pytest.mark.slow


def test_short_demo_reward_rises(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "strive.cli", "demo", "--steps", "8", "--seed", "1", "--out", str(out)]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = read_metrics(out / "logs")
    rewards = [rows[s]["critic/score/mean"] for s in range(1, 9)]
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 0.03, rewards
    assert "mean reward of the first" in result.stdout
    assert os.path.getsize(out / "logs" / "curves.png") > 0
    assert "val-core/strive/arithmetic/reward/mean@1" in rows[0]
    assert "val-aux/strive/arithmetic/right/mean@1" in rows[8]
    assert "validation (greedy), step 0 → 8: `#### N` format" in result.stdout
