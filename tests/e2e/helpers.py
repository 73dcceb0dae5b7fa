"""Running the real entry point (`python -m strive.trainer.main_ppo`) in a subprocess, as users do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# A reward a random tiny model can move: the share of response characters that are lowercase letters.
LETTER_REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if not solution_str:
        return 0.0
    return sum(c.islower() for c in solution_str) / len(solution_str)
'''


def write_reward(tmp_path) -> str:
    path = tmp_path / "letter_reward.py"
    path.write_text(LETTER_REWARD)
    return str(path)


def env() -> dict:
    e = dict(os.environ)
    e.update(HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0")
    if e.get("RAY_ADDRESS") != "local":  # "local" (a cluster of its own) lets GPU runs share a machine
        e.pop("RAY_ADDRESS", None)
    return e


def train_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "strive.trainer.main_ppo", *overrides]


def run_training(overrides: list[str], cwd, timeout: int = 600) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(overrides), cwd=cwd, env=env(), capture_output=True, text=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"training failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}")
    return result


def read_metrics(log_dir) -> dict[int, dict]:
    rows = {}
    with open(os.path.join(log_dir, "metrics.jsonl")) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                rows.setdefault(row["step"], {}).update(row)
    return rows
