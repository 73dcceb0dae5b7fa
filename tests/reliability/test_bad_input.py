"""Bad input, start-up checks and safe defaults, each injected into a real run through the entry point (tiny
model, CPU): over-long prompts, non-UTF-8 text and non-string ground truths stop (or are handled) before Ray
starts, naming file, row and column; a reward function that raises or hangs on one sample stops the run naming the
sample or scores it 0 and counts it (reward_manager.on_error / reward_manager.timeout); a reward module that does
not exist or does not import stops before Ray; every port the run listens on is bound to 127.0.0.1, with Ray's
token authentication on (RAY_AUTH_MODE unset)."""

import json
import subprocess
import threading
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.helpers import env, read_metrics, train_command

RAY_STARTED = "Started a local Ray instance"


def _rows(n, long_row=None, truth=lambda i: str(i)):
    rows = []
    for i in range(n):
        content = "What is 2 + 3?" if i != long_row else "word " * 300
        rows.append({"data_source": "openai/gsm8k", "prompt": [{"role": "user", "content": content}],
                     "ability": "math", "reward_model": {"style": "rule", "ground_truth": truth(i)},
                     "extra_info": {"split": "train", "index": i}})
    return rows


def _parquet(path, rows):
    pq.write_table(pa.Table.from_pylist(rows), path)
    return str(path)


def _overrides(model, train, tmp_path, *extra):
    return [f"data.train_files={train}", f"data.val_files={train}", "data.train_batch_size=4",
            "data.max_prompt_length=64", "data.max_response_length=8", f"actor_rollout_ref.model.path={model}",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4", "algorithm.adv_estimator=grpo",
            "actor_rollout_ref.rollout.n=2", "trainer.n_gpus_per_node=1", "trainer.device=cpu",
            "trainer.logger=['console','file']", "trainer.val_before_train=False", "trainer.test_freq=-1",
            "trainer.total_training_steps=1", "trainer.plot_curves=False", "trainer.save_freq=-1",
            f"trainer.default_local_dir={tmp_path / 'run'}", *extra]


def _start_up_failure(overrides, tmp_path):
    start = time.perf_counter()
    result = subprocess.run(train_command(overrides), cwd=tmp_path, env=env(), capture_output=True, text=True,
                            timeout=300)
    took = time.perf_counter() - start
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert RAY_STARTED not in out and "placement" not in out, out[-3000:]  # stopped before Ray and the workers
    return out, took


def test_overlong_prompt_stops_before_ray_naming_file_row_and_length(tiny_model_dir, tmp_path):
    # before: the run started Ray and the workers and crashed when a batch first reached row 5
    train = _parquet(tmp_path / "train.parquet", _rows(8, long_row=5))
    out, took = _start_up_failure(_overrides(tiny_model_dir, train, tmp_path), tmp_path)
    assert f"{train}: row 5 has a prompt of" in out and "longer than data.max_prompt_length=64" in out
    assert "1 of 8 rows" in out
    print(f"clear error after {took:.1f}s")


def test_unusable_ground_truth_stops_before_ray(tiny_model_dir, tmp_path):
    train = _parquet(tmp_path / "train.parquet", _rows(8, truth=lambda i: [str(i)]))
    out, _ = _start_up_failure(_overrides(tiny_model_dir, train, tmp_path), tmp_path)
    assert f"{train}: row 0, column 'reward_model.ground_truth'" in out and "a list" in out


def test_non_utf8_prompt_stops_before_ray(tiny_model_dir, tmp_path):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(r).encode() for r in _rows(8)]
    lines[3] = lines[3].replace(b"2 + 3", b"2 \xff 3")
    path.write_bytes(b"\n".join(lines) + b"\n")
    out, _ = _start_up_failure(_overrides(tiny_model_dir, str(path), tmp_path), tmp_path)
    assert f"{path}: line 4 (row 3) is not valid UTF-8" in out


@pytest.mark.parametrize("body, expect", [
    (None, "reward function file not found"),
    ("import no_such_module_anywhere\n", "No module named 'no_such_module_anywhere'"),
    ("def other(**kw):\n    return 0.0\n", "custom_reward_function.name='compute_score' is not defined"),
])
def test_bad_reward_module_stops_before_ray(tiny_model_dir, tmp_path, body, expect):
    reward = tmp_path / "reward.py"
    if body is not None:
        reward.write_text(body)
    train = _parquet(tmp_path / "train.parquet", _rows(8))
    out, _ = _start_up_failure(_overrides(tiny_model_dir, train, tmp_path, f"custom_reward_function.path={reward}"),
                               tmp_path)
    assert expect in out and str(reward) in out


BAD_TOOL = """tools:
  - class_name: no_such_tool_package.tools.CalcTool
    config: {type: native}
    tool_schema:
      type: function
      function: {name: calc, description: d, parameters: {type: object, properties: {}, required: []}}
"""


@pytest.mark.parametrize("tool_file", ["missing.yaml", "bad_tool.yaml"])
def test_bad_tool_config_stops_before_ray(tiny_model_dir, tmp_path, tool_file):
    """multi_turn.tool_config_path that does not exist, or names a class that does not import (the multi-turn
    start-up check, strive.agent.settings.check_agent_setup, loads the tools in the controller before Ray)."""
    import importlib.util

    if importlib.util.find_spec("strive.agent.settings") is None:
        pytest.skip("multi-turn rollouts are not in this tree (multi_turn.enable is refused)")
    (tmp_path / "bad_tool.yaml").write_text(BAD_TOOL)
    train = _parquet(tmp_path / "train.parquet", _rows(8))
    out, _ = _start_up_failure(_overrides(
        tiny_model_dir, train, tmp_path, "data.max_prompt_length=512", "actor_rollout_ref.rollout.mode=async",
        "actor_rollout_ref.rollout.multi_turn.enable=True",
        f"actor_rollout_ref.rollout.multi_turn.tool_config_path={tmp_path / tool_file}"), tmp_path)
    assert (str(tmp_path / tool_file) in out if tool_file == "missing.yaml"
            else "no_such_tool_package" in out), out[-3000:]


RAISING_REWARD = '''
def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if extra_info["index"] == 1:
        raise RuntimeError("scorer bug on purpose")
    return 0.5
'''


@pytest.mark.slow
def test_raising_reward_stops_the_run_naming_the_sample(tiny_model_dir, tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text(RAISING_REWARD)
    train = _parquet(tmp_path / "train.parquet", _rows(4))
    result = subprocess.run(train_command(_overrides(tiny_model_dir, train, tmp_path, "data.shuffle=False",
                                                     f"custom_reward_function.path={reward}")),
                            cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert "RewardError: the reward function raised on sample 2 of the batch, row index 1" in out, out[-3000:]
    assert "data_source='openai/gsm8k'" in out and "RuntimeError: scorer bug on purpose" in out


FAILING_REWARD = '''
import time


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    if extra_info["index"] == 1:
        raise RuntimeError("scorer bug on purpose")
    if extra_info["index"] == 2:
        time.sleep(60)  # hangs past reward_manager.timeout
    return 0.5
'''


def _listening(root_pid):
    """(process name, ip) of every listening inet socket of root_pid's process tree."""
    import psutil

    try:
        tree = [psutil.Process(root_pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        return set()
    pids = {p.pid: p for p in tree}
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            try:
                found.add((pids[conn.pid].name(), conn.laddr.ip))
            except psutil.NoSuchProcess:
                pass
    return found


@pytest.mark.slow
def test_failing_rewards_are_counted_and_every_port_is_loopback_with_ray_auth(tiny_model_dir, tmp_path):
    """One real run, RAY_AUTH_MODE unset (Ray 2.60 then turns token authentication on for the cluster it starts):
    one prompt's reward raises and another's hangs past reward_manager.timeout; both are scored 0 and counted
    (on_error=zero), and every socket the run's processes listen on is bound to 127.0.0.1. Before: GCS, raylet,
    workers, the dashboard agent and the gloo store listened on all interfaces; one reward exception ended the run
    and a hung reward hung it."""
    reward = tmp_path / "reward.py"
    reward.write_text(FAILING_REWARD)
    train = _parquet(tmp_path / "train.parquet", _rows(4))
    run_env = env()
    for key in ("RAY_AUTH_MODE", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "GLOO_SOCKET_IFNAME"):
        run_env.pop(key, None)
    run_env["HOME"] = str(tmp_path)  # Ray writes its token to ~/.ray/auth_token
    overrides = _overrides(tiny_model_dir, train, tmp_path, "data.shuffle=False", "trainer.n_gpus_per_node=2",
                           "actor_rollout_ref.actor.ppo_mini_batch_size=2", "reward_manager.on_error=zero",
                           "reward_manager.timeout=2", f"custom_reward_function.path={reward}")
    proc = subprocess.Popen(train_command(overrides), cwd=tmp_path, env=run_env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen, lines = set(), []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.time() + 600
    while proc.poll() is None and time.time() < deadline:
        seen |= _listening(proc.pid)
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
    reader.join(10)
    out = "".join(lines)
    assert proc.returncode == 0, out[-4000:]
    assert (tmp_path / ".ray" / "auth_token").exists()  # token authentication was on
    names = {name for name, _ in seen}
    assert {"gcs_server", "raylet"} <= names, seen  # the poll saw the cluster's servers
    assert sum(1 for name, _ in seen if name.startswith("ray::")) >= 1, seen
    print(f"listening sockets seen: {sorted(seen)}")
    exposed = {(name, ip) for name, ip in seen if ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")}
    assert not exposed, f"listening beyond loopback: {sorted(exposed)}"
    metrics = read_metrics(tmp_path / "run" / "logs")
    assert metrics[1]["reward/errors"] == 4.0 and metrics[1]["reward/timeouts"] == 2.0  # rows 1, 2 × rollout.n=2
    assert "4 of 8 responses scored 0 after an error (2 timed out)" in out
