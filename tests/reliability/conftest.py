"""Fault-injection scaffolding shared by the reliability suite: a real run through the entry point in a
subprocess (tiny model, 2 CPU slots), watched from outside.

    def test_x(fault_run, fault_data, tiny_model_dir, tmp_path):
        run = fault_run(grpo_overrides(tiny_model_dir, fault_data, tmp_path / "ckpt"),
                        env={"STRIVE_FAULT_INJECT": "phase:generate:rank:0:kill"})
        rc = run.wait(120)
        assert "WorkerDied" in run.output()
        assert run.survivors(within=15) == []

`RunHandle` notes, every 0.2 s while the run lives, each process that descends from the driver (GCS, raylet,
its agents, the Ray workers) with its start time, so that afterwards it can tell which of them are still alive
without matching process names machine-wide (other Ray clusters may run beside the test). The fixture kills
whatever a test leaves running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from typing import Optional

import pytest

from tests.e2e.helpers import env as run_env
from tests.e2e.helpers import read_metrics, train_command, write_reward


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid → (parent pid, start time, state letter) from /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            table[int(name)] = (int(fields[1]), int(fields[19]), fields[0])
    return table


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class RunHandle:
    """One training run started through `python -m strive.trainer.main_ppo`, its output in a file."""

    def __init__(self, overrides: list[str], cwd, env: Optional[dict] = None):
        self.log_path = os.path.join(str(cwd), f"run-{time.monotonic_ns()}.log")
        self._log = open(self.log_path, "w")
        full_env = run_env()
        full_env["RAY_ADDRESS"] = "local"  # a cluster of its own, never one another test started with `ray start`
        full_env.update(env or {})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(train_command(overrides), cwd=cwd, env=full_env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self.seen: dict[int, tuple[int, str]] = {}  # pid → (start time, command line when first seen)
        self._watching = True
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    # -- what the run prints --------------------------------------------------------------------------------------
    def output(self) -> str:
        with open(self.log_path, errors="replace") as fh:
            return fh.read()

    def wait_for(self, text: str, timeout: float, or_exit: bool = False) -> Optional[float]:
        """Seconds since start when `text` first appears in the output; fails if time runs out, and if the run
        ends first, unless `or_exit` (then None: a line a worker printed just before the run ended can still be
        on its way through Ray's log forwarding)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                if or_exit:
                    return None if text not in self.output() else time.monotonic() - self.started
                raise AssertionError(f"the run ended ({self.proc.returncode}) before printing {text!r}:\n"
                                     f"{self.output()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not printed within {timeout} s:\n{self.output()[-4000:]}")

    def wait(self, timeout: float) -> int:
        """The driver's exit code; fails (and kills the run) if it is still running after `timeout` s."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            raise AssertionError(f"the run did not end within {timeout} s:\n{self.output()[-4000:]}") from None

    def metrics(self, ckpt) -> dict[int, dict]:
        return read_metrics(os.path.join(str(ckpt), "logs"))

    # -- its processes --------------------------------------------------------------------------------------------
    def _watch(self) -> None:
        while self._watching and self.proc.poll() is None:
            self._note()
            time.sleep(0.2)

    def _note(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = list(children.get(self.pid, []))
        while todo:
            pid = todo.pop()
            if pid not in self.seen:
                self.seen[pid] = (table[pid][1], _cmdline(pid))
            todo.extend(children.get(pid, []))

    def worker_pids(self, timeout: float = 60) -> list[int]:
        """Pids of the Ray actor processes hosting strive's workers (`ray::WorkerProcess...`), once there are any."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._note()
            alive = self.alive()
            pids = [p for p in alive if _cmdline(p).startswith("ray::WorkerProcess")]
            if pids:
                return sorted(pids)
            time.sleep(0.2)
        raise AssertionError("no ray::WorkerProcess descends from the driver")

    def alive(self) -> list[int]:
        """Processes seen under the driver that still run (same pid and start time; zombies count as gone)."""
        table = _proc_table()
        return [pid for pid, (start, _) in self.seen.items()
                if pid in table and table[pid][1] == start and table[pid][2] != "Z"]

    def survivors(self, within: float) -> list[str]:
        """Waits up to `within` s for every process seen under the driver to end; the ones left, described."""
        deadline = time.monotonic() + within
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        return [f"{pid} {self.seen[pid][1][:120]}" for pid in self.alive()]

    def time_until_gone(self, limit: float) -> float:
        """Seconds until every process seen under the driver has ended (limit if some are still there)."""
        start = time.monotonic()
        while self.alive() and time.monotonic() - start < limit:
            time.sleep(0.2)
        return time.monotonic() - start

    def kill_driver(self) -> None:
        """SIGKILL the driver process alone (not its process group), as an OOM killer or `kill -9 PID` would."""
        self._note()
        self.proc.kill()
        self.proc.wait()

    def kill_all(self) -> None:
        """Clean-up: the driver's process group and every process seen under it."""
        self._watching = False
        for pid in [self.pid, *self.alive()]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.wait()
        self._log.close()


def grpo_overrides(model: str, data, ckpt, steps: int = 2, reward: Optional[str] = None) -> list[str]:
    """A small GRPO run on two CPU worker processes: 4 prompts × 2 samples a step, 8 response tokens; `data` is
    a folder with train/test parquet files (`fault_data`), the reward its letter_reward.py unless given."""
    reward = reward or os.path.join(str(data), "letter_reward.py")
    return [f"data.train_files={data}/train.parquet", f"data.val_files={data}/test.parquet",
            "data.train_batch_size=4", "data.max_prompt_length=192", "data.max_response_length=8",
            f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=1e-4",
            "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=2",
            "trainer.device=cpu", "trainer.logger=['console','file']", "trainer.val_before_train=False",
            "trainer.plot_curves=False", f"trainer.total_training_steps={steps}",
            f"trainer.default_local_dir={ckpt}", f"custom_reward_function.path={reward}"]


@pytest.fixture(scope="session")
def fault_data(tmp_path_factory):
    """A synthetic arithmetic dataset (32 train rows, 2 test rows) and a reward file beside it."""
    from strive.data.synthetic import write_dataset

    out = tmp_path_factory.mktemp("fault-data")
    write_dataset(str(out), n_train=32, n_test=2, seed=2)
    write_reward(out)
    return out


@pytest.fixture
def fault_run(tmp_path):
    """Factory: `fault_run(overrides, env=None)` starts a run in tmp_path and returns its RunHandle; whatever is
    still running at the end of the test is killed."""
    handles: list[RunHandle] = []

    def start(overrides: list[str], env: Optional[dict] = None) -> RunHandle:
        handles.append(RunHandle(overrides, tmp_path, env))
        return handles[-1]

    yield start
    for handle in handles:
        handle.kill_all()
