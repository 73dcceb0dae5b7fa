"""The best GSM8K run with Qwen2.5-Coder-0.5B-Instruct on the CPU (the fourth run, with a KL anchor) as one PNG.

Three panels against the training step: greedy validation on the 200 test questions (strict score, share of
answers in the `#### N` format, share right in any format) with the issue's target and the base model's
right-in-any-format share at 400 tokens; the trained samples' mean response length and truncated fraction; the
step time. It reads the run's summary and its validation split (`bench/gsm8k_dump_stats.py`) from bench/results,
the numbers `bench/README.md` tabulates, with step 0's split from the base model's validation pass on the same
questions and decoding (`gsm8k_qwen_cpu_base_answers.json`); the run itself was

    RUN_DIR=~/strive_runs/gsm8k_qwen_cpu_kl bash bench/gsm8k_qwen_cpu.sh data.seed=2 data.max_response_length=400
        actor_rollout_ref.actor.use_kl_loss=True actor_rollout_ref.actor.kl_loss_coef=0.01
        trainer.val_before_train=False trainer.validation_data_dir=...

    /work/venv/bin/python bench/gsm8k_qwen_plot.py      # writes bench/results/gsm8k_qwen_cpu_kl.png
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
COMMAND = ("RUN_DIR=~/strive_runs/gsm8k_qwen_cpu_kl bash bench/gsm8k_qwen_cpu.sh data.seed=2 "
           "data.max_response_length=400 actor_rollout_ref.actor.use_kl_loss=True "
           "actor_rollout_ref.actor.kl_loss_coef=0.01 trainer.val_before_train=False "
           "trainer.validation_data_dir=...")
TARGET = 0.35  # the strict score on the 200 questions


def series(by_step: dict) -> tuple[list[int], list[float]]:
    """A {"step": value} dict as (steps, values) in step order."""
    steps = sorted(by_step, key=int)
    return [int(s) for s in steps], [by_step[s] for s in steps]


def draw_validation(ax, run: dict, answers: dict) -> None:
    strict = run["validation_strict_score"]
    ax.plot(*series(strict), marker="o", label='strict score (right and "#### N")')
    for key, label in (("strict_format", '"#### N" format share'), ("answer_right", "answer right, any format")):
        ax.plot(*series({s: a[key] for s, a in answers.items()}), marker="o", label=label)
    best = max(strict, key=strict.get)
    ax.annotate(f"best: strict {strict[best]:.3f} at step {best}\n(format {answers[best]['strict_format']:.3f}, "
                f"right {answers[best]['answer_right']:.3f})", (int(best), strict[best]), xytext=(0, -45),
                textcoords="offset points", fontsize=8, ha="center", arrowprops={"arrowstyle": "->", "lw": 0.8})
    ax.axhline(TARGET, color="k", ls="--", lw=1, label=f"issue's target {TARGET:.2f}")
    base = answers["0"]["answer_right"]
    ax.axhline(base, color="gray", ls="--", lw=1, label=f"base model right, any format {base:.3f}")
    ax.set(ylabel="share of 200 answers", ylim=(0, 1), title="validation: 200 GSM8K test questions, greedy, 400 tokens")
    ax.legend(fontsize=8, loc="upper left")


def draw_length(ax, run: dict) -> None:
    ax.plot(*series(run["response_length"]), marker=".", color="C0", label="mean response length")
    ax.set(ylabel="tokens", ylim=(0, 420), title="trained samples (8 responses to the step's prompt)")
    twin = ax.twinx()
    twin.plot(*series(run["truncated_fraction"]), marker=".", color="C3", ls=":", label="truncated at 400 tokens")
    twin.set(ylabel="truncated fraction", ylim=(0, 1.05))
    lines = ax.get_lines() + twin.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper left")


def draw_step_time(ax, run: dict) -> None:
    steps, seconds = series(run["step_time_s"])
    ax.plot(steps, seconds, marker=".", color="C2")
    median = run["step_time_s_median"]["step"]
    ax.axhline(median, color="gray", ls="--", lw=1, label=f"median {median:.0f} s")
    for s, rounds in run["generation_rounds"].items():
        if rounds > 1:
            ax.annotate(f"{rounds} generation rounds", (int(s), run["step_time_s"][s]), xytext=(6, 2),
                        textcoords="offset points", fontsize=8, va="bottom")
    ax.set(ylabel="seconds", xlabel="training step", ylim=(0, 1.12 * max(seconds)),
           title="step time (2-core CPU, vLLM)")
    ax.legend(fontsize=8, loc="upper right")


def plot(run: dict, answers: dict, out: str) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 11), layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle("GRPO on GSM8K, Qwen2.5-Coder-0.5B-Instruct, CPU, KL anchor 0.01 (fourth run)")
    axes = fig.subplots(3, 1, sharex=True, height_ratios=(1.6, 1, 1))
    draw_validation(axes[0], run, answers)
    draw_length(axes[1], run)
    draw_step_time(axes[2], run)
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[2].set_xticks(range(0, max(series(run["step_time_s"])[0]) + 1, 3))
    fig.text(0.01, 0.0, textwrap.fill("run: " + COMMAND, 130), fontsize=7, family="monospace", va="bottom")
    fig.get_layout_engine().set(rect=(0, 0.04, 1, 0.96))
    fig.savefig(out, dpi=100)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=os.path.join(RESULTS, "gsm8k_qwen_cpu_kl.json"))
    p.add_argument("--answers", default=os.path.join(RESULTS, "gsm8k_qwen_cpu_kl_answers.json"))
    p.add_argument("--base", default=os.path.join(RESULTS, "gsm8k_qwen_cpu_base_answers.json"))
    p.add_argument("--out", default=os.path.join(RESULTS, "gsm8k_qwen_cpu_kl.png"))
    args = p.parse_args()
    with open(args.run) as f, open(args.answers) as g, open(args.base) as h:
        answers = {**json.load(h), **json.load(g)}  # step 0: the base model
        print(f"wrote {plot(json.load(f), answers, args.out)}")


if __name__ == "__main__":
    main()
