"""strive.tracking: JSONL rows and resume, console line and ETA, optional backends, TensorBoard, plots, tables."""

import json
import math
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from strive.tracking import Tracker, as_float, by_step, read_jsonl, reduce_metrics, reward_table, val_key
from strive.tracking.backends import Console, format_duration, generations_markdown, verl_line
from strive.tracking.plot import main as plot_main
from strive.tracking.report import _panels, plot_curves

VAL = "val-core/openai/gsm8k/acc/mean@1"


def _fake_run(log_dir, steps=10):
    """A run that learns: reward and validation rise, responses shorten, validation every 5 steps."""
    tracker = Tracker(["file"], "proj", "fake-exp", str(log_dir), config={"trainer": {"experiment_name": "fake-exp"}})
    tracker.log({VAL: 0.2}, step=0)
    for step in range(1, steps + 1):
        metrics = {
            "critic/score/mean": 0.1 + 0.05 * step,
            "response_length/mean": 120.0 - 3 * step,
            "actor/entropy": 1.0 / step,
            "actor/pg_loss": 0.01 * (-1) ** step,
            "actor/ppo_kl": 1e-3 * step,
            "timing_s/step": 30.0 + step,
        }
        if step % 5 == 0:
            metrics[VAL] = 0.2 + 0.03 * step
        tracker.log(metrics, step=step)
    tracker.finish()
    return log_dir / "metrics.jsonl"


def test_package_import_loads_no_heavy_libraries():
    code = ("import sys, strive.tracking, strive.tracking.plot; "
            "print(sorted(m for m in ('torch', 'tensorboard', 'matplotlib', 'wandb', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_jsonl_rows_config_and_append_on_resume(tmp_path):
    tracker = Tracker(["file"], "proj", "exp", str(tmp_path), config={"trainer": {"total_epochs": 3}})
    tracker.log({"critic/score/mean": torch.tensor(0.5), "actor/pg_loss": np.float32(-0.25)}, step=1)
    tracker.log({"critic/score/mean": float("nan"), "actor/entropy": torch.tensor([1.0, 2.0]), "note": "x"}, step=2)
    tracker.finish()
    tracker.finish()  # idempotent
    assert json.loads((tmp_path / "config.json").read_text()) == {"trainer": {"total_epochs": 3}}

    resumed = Tracker(["file"], "proj", "exp", str(tmp_path))
    resumed.log({"critic/score/mean": 0.75}, step=3)
    resumed.finish()
    assert read_jsonl(tmp_path) == [
        {"step": 1, "critic/score/mean": 0.5, "actor/pg_loss": -0.25},
        {"step": 2, "critic/score/mean": None, "actor/entropy": 1.5, "note": None},
        {"step": 3, "critic/score/mean": 0.75},
    ]


def test_jsonl_resume_after_a_torn_last_line(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "critic/score/mean": 0.5}\n{"step": 2, "critic/sc')
    tracker = Tracker(["file"], "proj", "exp", str(tmp_path))
    tracker.log({"critic/score/mean": 0.7}, step=2)
    tracker.finish()
    assert read_jsonl(tmp_path / "metrics.jsonl") == [{"step": 1, "critic/score/mean": 0.5},
                                                      {"step": 2, "critic/score/mean": 0.7}]
    assert "skipped 1 unreadable line" in capsys.readouterr().err


def test_console_progress_line_and_eta(capsys):
    tracker = Tracker(["console"], "proj", "exp", "unused", total_steps=20)
    tracker.log({VAL: 0.38, "val-aux/openai/gsm8k/reward/mean@1": 0.39}, step=0)
    tracker.log({"critic/score/mean": 0.4121, "response_length/mean": 87.24, "timing_s/step": 40.0}, step=1)
    tracker.log({"critic/score/mean": float("nan"), "response_length/mean": 80.0, "timing_s/step": 50.0}, step=2)
    tracker.log({"critic/score/mean": 0.5, VAL: 0.45, "timing_s/step": 45.0}, step=3)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "[step 0/20 | 0%] val 0.380",
        f"  validation: {VAL} 0.3800 | val-aux/openai/gsm8k/reward/mean@1 0.3900",
        "[step 1/20 | 5%] reward 0.412 | resp_len 87.2 | step 40.0s | eta 12m40s",  # 19 x 40 s
        "[step 2/20 | 10%] resp_len 80.0 | step 50.0s | eta 13m30s",  # NaN reward left out; 18 x 45 s
        "[step 3/20 | 15%] reward 0.500 | val 0.450 | step 45.0s | eta 12m45s",  # 17 x 45 s
        f"  validation: {VAL} 0.4500",
    ]
    tracker.log({"critic/score/mean": 0.5, "train/generated_score_mean": 0.0625, "train/num_gen_batches": 3}, step=4)
    assert capsys.readouterr().out.startswith("[step 4/20 | 20%] reward 0.500 | all sampled 0.062 | rounds 3 |")


def test_console_without_total_steps_and_verbose(capsys):
    console = Console(total_steps=None, verbose=True)
    console.log({"timing_s/step": 2.0, "actor/pg_loss": -0.5, "critic/score/mean": None}, step=7)
    assert capsys.readouterr().out.splitlines() == [
        "[step 7] step 2.0s",
        "step:7 - timing_s/step:2 - actor/pg_loss:-0.5",  # verl's format; None values are left out
    ]


def test_verl_line_greps_like_verl():
    line = verl_line({"critic/score/mean": 0.4125, "actor/lr": 1e-6, "val-core/openai/gsm8k/acc/mean@1": 0.5,
                      "training/global_step": 12.0, "actor/pg_loss": -0.123456789}, 12)
    assert line == ("step:12 - critic/score/mean:0.4125 - actor/lr:1e-06 - val-core/openai/gsm8k/acc/mean@1:0.5"
                    " - training/global_step:12 - actor/pg_loss:-0.123456789")
    import re

    assert float(re.search(r"critic/score/mean:([-\d.e+]+)", line).group(1)) == 0.4125


ROWS = [{"input": "Q: 1+1?", "output": "2", "gts": "2", "score": 1.0},
        {"input": "Q: 2|3", "output": "line\nbreak", "gts": "5", "score": 0.0}]


def test_generations_go_to_console_file_and_wandb(tmp_path, monkeypatch, capsys):
    logged = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: None
    fake.log = lambda data, step: logged.append((data, step))
    fake.finish = lambda: None
    fake.Table = lambda columns, data: ("table", columns, data)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = Tracker(["console", "file", "wandb"], "proj", "exp", str(tmp_path))
    tracker.log_generations(ROWS, step=3)
    tracker.finish()
    out = capsys.readouterr().out
    assert "val sample 0 (step 3, score 1.000)" in out and "'Q: 2|3'" in out
    lines = [json.loads(x) for x in (tmp_path / "val_generations.jsonl").read_text().splitlines()]
    assert lines == [{"step": 3, **r} for r in ROWS]
    assert logged == [({"val/generations": ("table", ["step", "input", "output", "score"],
                                            [[3, "Q: 1+1?", "2", 1.0], [3, "Q: 2|3", "line\nbreak", 0.0]])}, 3)]
    assert generations_markdown(ROWS).splitlines()[-1] == "| Q: 2\\|3 | line<br>break | 0.0000 |"


def test_a_backend_failing_on_generations_only_warns(tmp_path, capsys):
    tracker = Tracker(["file"], "proj", "exp", str(tmp_path))
    tracker.backends["file"].log_generations = lambda rows, step: 1 / 0
    tracker.log_generations(ROWS, step=1)
    tracker.finish()
    assert "file did not take the validation samples" in capsys.readouterr().out


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (41.4, "41s"), (662, "11m02s"), (3900, "1h05m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_missing_wandb_warns_and_is_skipped(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now raises ImportError
    tracker = Tracker(["console", "wandb", "file"], "proj", "exp", str(tmp_path))
    assert list(tracker.backends) == ["console", "file"]
    tracker.log({"critic/score/mean": 1.0}, step=1)
    tracker.finish()
    err = capsys.readouterr().err
    assert "trainer.logger includes 'wandb' but wandb is not installed; skipping it (pip install wandb)" in err
    assert err.count("warning") == 1
    assert read_jsonl(tmp_path) == [{"step": 1, "critic/score/mean": 1.0}]


def test_installed_wandb_gets_init_log_finish(tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("wandb")
    fake.init = lambda **kw: calls.append(("init", kw))
    fake.log = lambda data, step: calls.append(("log", data, step))
    fake.finish = lambda: calls.append(("finish",))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    tracker = Tracker(["wandb"], "proj", "exp", str(tmp_path), config={"a": 1})
    tracker.log({"critic/score/mean": np.float64(0.5), "actor/pg_loss": float("inf")}, step=4)
    tracker.finish()
    assert calls == [
        ("init", {"project": "proj", "name": "exp", "config": {"a": 1}, "dir": str(tmp_path)}),
        ("log", {"critic/score/mean": 0.5}, 4),
        ("finish",),
    ]


def test_unknown_backend_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown backend.*'wandbb'.*console, file, tensorboard, wandb, mlflow"):
        Tracker(["console", "wandbb"], "proj", "exp", "unused")


def test_tensorboard_events_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = Tracker(["tensorboard"], "proj", "exp", str(tmp_path))
    tracker.log({"critic/score/mean": 0.25, "actor/pg_loss": float("nan")}, step=1)
    tracker.log({"critic/score/mean": torch.tensor(0.5), "actor/pg_loss": -0.125}, step=2)
    tracker.finish()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["actor/pg_loss", "critic/score/mean"]
    assert [(e.step, e.value) for e in events.Scalars("critic/score/mean")] == [(1, 0.25), (2, 0.5)]
    assert [(e.step, e.value) for e in events.Scalars("actor/pg_loss")] == [(2, -0.125)]  # NaN skipped


def test_plot_curves_writes_a_png(tmp_path):
    path = _fake_run(tmp_path)
    out = plot_curves(path, tmp_path / "plots" / "curves.png")
    data = (tmp_path / "plots" / "curves.png").read_bytes()
    assert out == str(tmp_path / "plots" / "curves.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_plot_cli_defaults_beside_the_metrics(tmp_path, capsys):
    _fake_run(tmp_path)
    out = plot_main([str(tmp_path), "--keys", "actor/entropy", "val-core/*"])
    assert out == str(tmp_path / "curves.png") and (tmp_path / "curves.png").stat().st_size > 0
    printed = capsys.readouterr().out
    assert printed.startswith("reward = critic/score/mean") and printed.rstrip().endswith(f"wrote {out}")


def test_panels_pick_what_is_present():
    keys = {"critic/score/mean", "actor/ppo_kl", "actor/kl_loss", VAL, "val-core/b/reward/mean@1", "timing_s/gen"}
    assert _panels(keys, None) == [
        ("reward (all sampled responses)", ["critic/score/mean"]),
        ("validation", ["val-core/b/reward/mean@1", VAL]),
        ("KL", ["actor/kl_loss"]),  # kl_loss preferred over ppo_kl
    ]
    # under dynamic sampling the reward panel shows every sampled response, not only the kept groups
    assert _panels(keys | {"train/generated_score_mean"}, None)[0] == (
        "reward (all sampled responses)", ["train/generated_score_mean"])
    assert _panels({"actor/ppo_kl"}, None) == [("KL", ["actor/ppo_kl"])]
    assert _panels(keys, ["timing_s/*", "missing"]) == [("timing_s/*", ["timing_s/gen"])]


def test_panels_show_format_and_right_answers_apart():
    fmt, right = "val-aux/strive/arithmetic/formatted/mean@1", "val-aux/strive/arithmetic/right/mean@1"
    assert _panels({VAL, fmt, right, "val-aux/strive/arithmetic/right/std@1"}, None) == [
        ("validation", [VAL]),
        ("validation: answers in the `#### N` format", [fmt]),
        ("validation: right answers", [right]),
    ]
    any_format = "val-aux/strive/arithmetic/right_any_format/mean@1"
    assert _panels({right, any_format}, None) == [("validation: right answers", [right, any_format])]


def test_demo_validation_split_first_and_last_validation():
    from strive.demo import validation_split

    fmt, right = "val-aux/strive/arithmetic/formatted/mean@1", "val-aux/strive/arithmetic/right/mean@1"
    rows = [{"step": 0, VAL: 0.13, fmt: 0.71875, right: 0.0625}, {"step": 4, "critic/score/mean": 0.1},
            {"step": 6, fmt: 0.9, right: 0.1}, {"step": 12, fmt: 1.0, right: 0.0}]
    assert validation_split(rows) == (
        "validation (greedy), step 0 → 12: `#### N` format 0.719 → 1.000, right answers 0.062 → 0.000")
    assert validation_split([{"step": 0, VAL: 0.1}, {"step": 8, VAL: 0.2}]) is None  # a scorer without the split
    assert validation_split([{"step": 0, fmt: 0.5, right: 0.1}]) is None  # validated once: nothing to compare


def test_reward_table(tmp_path):
    table = reward_table(_fake_run(tmp_path), every=4)
    assert table.splitlines() == [
        f"reward = critic/score/mean, val = {VAL}, resp_len = response_length/mean",
        "  step     reward        val   resp_len",
        "     0          -      0.200          -",
        "     4      0.300          -      108.0",
        "     5      0.350      0.350      105.0",
        "     8      0.500          -       96.0",
        "    10      0.600      0.500       90.0",
    ]
    no_val = reward_table([{"step": 1, "critic/score/mean": 0.5}, {"step": 2, "other": 1.0}])
    assert no_val.splitlines()[1:] == ["  step     reward   resp_len", "     1      0.500          -"]
    assert reward_table([]) == "(no critic/score/mean or validation metrics logged)"


def test_by_step_merges_resumed_rows_latest_wins():
    rows = [{"step": 5, "a": 1.0, "b": 2.0}, {"step": 6, "a": 3.0}, {"step": 5, "a": 9.0, "b": None}]
    assert by_step(rows) == {5: {"a": 9.0, "b": 2.0}, 6: {"a": 3.0}}
    assert val_key(["val-aux/x/reward/mean@1", "val-core/b/acc/mean@4", "val-core/a/acc/std@4"]) == \
        "val-core/b/acc/mean@4"


def test_reduce_metrics():
    per_mini_batch = [
        {"actor/pg_loss": 1.0, "actor/entropy": torch.tensor([1.0, 3.0]), "perf/max_memory_allocated_gb": 10.0,
         "response_length/min": 4.0},
        {"actor/pg_loss": np.float32(2.0), "actor/entropy": [5.0], "perf/max_memory_allocated_gb": 12.0,
         "response_length/min": 2.0, "critic/vf_loss": 0.5},
    ]
    assert reduce_metrics(per_mini_batch) == {
        "actor/pg_loss": 1.5,
        "actor/entropy": 3.0,  # pooled: mean(1, 3, 5)
        "perf/max_memory_allocated_gb": 12.0,  # verl: keys containing "max" reduce by max ...
        "response_length/min": 2.0,  # ... and "min" by min
        "critic/vf_loss": 0.5,  # present in one mini-batch only
    }
    assert reduce_metrics({"actor/pg_loss": [1.0, 2.0, 6.0], "note": ["x"]}) == {"actor/pg_loss": 3.0}
    assert math.isnan(reduce_metrics([{"actor/pg_loss": 1.0}, {"actor/pg_loss": float("nan")}])["actor/pg_loss"])


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (3, 3.0), (True, 1.0), (np.int64(4), 4.0), (np.array([1.0, 2.0]), 1.5),
    (torch.tensor(2.5, dtype=torch.bfloat16), 2.5), ([torch.tensor(1.0), 3.0], 2.0),
    (float("inf"), None), (torch.tensor([]), None), ("text", None), (None, None), ({"a": 1}, None),
])
def test_as_float(value, expected):
    assert as_float(value) == expected
