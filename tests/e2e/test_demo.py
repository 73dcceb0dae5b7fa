"""The README's demo, shortened: a real GRPO run of SmolLM2-135M-Instruct (fetched from PyPI) on the CPU with a
fixed seed; greedy right answers on the 64 held-out problems must rise (not only the format, not only the training
reward), and the summary must show problems fixed by training from the validation dumps."""

import os
import subprocess
import sys

import pytest

from tests.e2e.helpers import env, read_metrics

pytestmark = pytest.mark.slow


def test_short_demo_right_answers_rise(tmp_path):
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
    right = "val-aux/strive/arithmetic/right/mean@1"
    before, after = rows[0][right], rows[8][right]
    assert after >= 2 * before and after >= before + 0.1, (before, after)
    any_format = "val-aux/strive/arithmetic/right_any_format/mean@1"
    assert rows[8][any_format] > rows[0][any_format], (rows[0][any_format], rows[8][any_format])
    assert "validation (greedy), step 0 → 8: `#### N` format" in result.stdout
    assert "held-out problems right at step 8 but not at step 0: " in result.stdout
    dumped = (out / "validation" / "8.jsonl").read_text().splitlines()
    assert len(dumped) == 64 and all('"finish_reason"' in line for line in dumped)
