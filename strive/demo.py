"""`strive demo`: a real RL run of a small real model on the CPU, ~6 min on 2 cores with bf16 units, ~12 without.

GRPO on SmolLM2-135M-Instruct (fetched from PyPI once), rollouts on the `hf` engine, two FSDP2 workers on
gloo, arithmetic word problems generated locally and scored like GSM8K (1 for the right number after `####`, 0
otherwise). Greedy, the model gets 14% of the 64 held-out problems right: it mostly guesses a number instead of
writing the sum it can do. Rewarded for right answers only, it learns to write the calculation and carry its
result, and right answers on the held-out problems rise (docs/demo.md has the numbers of three seeds). It ends
with a table of reward by step, the greedy validation's format, right-answer and right-in-any-format shares at
the first and last validation, problems it got wrong before and right after, and a PNG of the curves.

    strive demo                              # defaults below
    strive demo --steps 8 --out /tmp/d       # shorter
    strive demo --gsm8k ../shared/data/gsm8k # the real GSM8K instead of generated problems
    strive demo -- trainer.n_gpus_per_node=1 # any trainer override after --
"""

from __future__ import annotations

import argparse
import os
import sys

from strive.config.cpu_dtype import dtype_for_this_cpu


PRESETS = {"bfloat16": ("5e-5", False), "float32": ("3e-5", True)}
"""Actor learning rate and gradient checkpointing, by the dtype the demo computes in (docs/demo.md has the seeds
behind each). bf16 (CPUs with bf16 units) is the setting of the 12-05 results. On CPUs without bf16 units the demo
computes in float32 (strive/config/cpu_dtype.py); there lr 5e-5 collapsed one seed of three (no right answer after
step 1) and wore another down by step 12, while 3e-5 learned on all three; and float32 activations without
checkpointing raised the peak memory per worker from 3.6 to 5.7-6.0 GB, with checkpointing 2.9 GB."""


compute_dtype = dtype_for_this_cpu  # the dtype the demo computes in on this CPU


def demo_overrides(data_dir: str, out_dir: str, model: str, steps: int, seed: int, workers: int,
                   dtype: str = "bfloat16") -> list[str]:
    lr, checkpointing = PRESETS[dtype]
    return [
        f"data.train_files={data_dir}/train.parquet", f"data.val_files={data_dir}/test.parquet",
        "data.train_batch_size=8", "data.max_prompt_length=256", "data.filter_overlong_prompts=True",
        "data.max_response_length=64", f"data.seed={seed}", "data.val_max_samples=64",
        f"actor_rollout_ref.model.path={model}", "actor_rollout_ref.rollout.name=hf",
        "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=4", "actor_rollout_ref.rollout.temperature=0.7",
        f"actor_rollout_ref.actor.optim.lr={lr}", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={checkpointing}",
        f"actor_rollout_ref.actor.fsdp_config.seed={seed}",
        "trainer.device=cpu", f"trainer.n_gpus_per_node={workers}", "trainer.nnodes=1",
        f"trainer.total_training_steps={steps}", "trainer.val_before_train=True", f"trainer.test_freq={steps}",
        "trainer.save_freq=-1", "trainer.resume_mode=disable", "trainer.logger=['console','file']",
        "trainer.project_name=strive_demo", "trainer.experiment_name=grpo_smollm2_arithmetic",
        f"trainer.default_local_dir={out_dir}", f"trainer.validation_data_dir={out_dir}/validation",
    ]


def prepare_data(out_dir: str, gsm8k: str | None, seed: int) -> str:
    data_dir = os.path.join(out_dir, "data")
    if gsm8k:
        from strive.data.gsm8k import main as gsm8k_main

        gsm8k_main(["--local_dataset_path", gsm8k, "--local_dir", data_dir])
    else:
        from strive.data.synthetic import SHOW_WORK, write_dataset

        write_dataset(data_dir, n_train=2000, n_test=64, seed=seed, instruction=SHOW_WORK)
    return data_dir


def summarize(out_dir: str, first_k: int = 3) -> dict[str, float]:
    """Print the reward table and the first-k vs last-k reward; return those means."""
    from strive.tracking import read_jsonl, reward_table

    jsonl = os.path.join(out_dir, "logs", "metrics.jsonl")
    rows = [r for r in read_jsonl(jsonl) if r.get("critic/score/mean") is not None]
    print(reward_table(jsonl))
    rewards = [r["critic/score/mean"] for r in sorted(rows, key=lambda r: r["step"])]
    k = max(1, min(first_k, len(rewards) // 2))
    first, last = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    print(f"\nmean reward of the first {k} steps: {first:.3f}; of the last {k} steps: {last:.3f}")
    split = validation_split(read_jsonl(jsonl))
    if split:
        print(split)
    for line in fixed_examples(os.path.join(out_dir, "validation")):
        print(line)
    png = os.path.join(out_dir, "logs", "curves.png")
    if os.path.exists(png):
        print(f"curves: {png}")
    return {"first": first, "last": last}


def validation_split(rows: list[dict]) -> str | None:
    """'validation (greedy), step A → B: `#### N` format x → y, right answers u → v', from the scorer's
    `formatted` and `right` entries (strive/arithmetic reports them; other scorers may not)."""
    from strive.tracking.records import by_step

    merged = by_step(rows)
    keys = sorted({k for row in merged.values() for k in row if k.startswith("val-aux/")})
    parts, span = [], ""
    for label, var in (("`#### N` format", "formatted"), ("right answers", "right"),
                       ("right in any format", "right_any_format")):
        key = next((k for k in keys if f"/{var}/mean@" in k), None)
        points = [(step, row[key]) for step, row in merged.items() if key in row]
        if len(points) >= 2:
            (first_step, first), (last_step, last) = points[0], points[-1]
            span = f"step {first_step} → {last_step}"
            parts.append(f"{label} {first:.3f} → {last:.3f}")
    return f"validation (greedy), {span}: " + ", ".join(parts) if parts else None


def fixed_examples(val_dir: str, k: int = 3) -> list[str]:
    """Up to `k` held-out problems the greedy model got wrong at the first validation and right at the last, from
    the validation dumps (trainer.validation_data_dir), and how many responses used the whole length budget."""
    from strive.data.synthetic import SHOW_WORK
    from strive.reward.arithmetic import compute_score
    from strive.tracking import read_jsonl

    if not os.path.isdir(val_dir):
        return []
    dumps = sorted((int(f[:-6]), f) for f in os.listdir(val_dir) if f.endswith(".jsonl"))
    if len(dumps) < 2:
        return []

    def load(name: str) -> dict[str, dict]:
        return {row["input"]: row for row in read_jsonl(os.path.join(val_dir, name))}

    (s0, f0), (s1, f1) = dumps[0], dumps[-1]
    before, after = load(f0), load(f1)
    right = {step: {q for q, r in rows.items() if compute_score(r["output"], r["gts"])["right"]}
             for step, rows in ((s0, before), (s1, after))}
    fixed = [q for q in before if q in after and q not in right[s0] and q in right[s1]]
    lines = [f"held-out problems right at step {s1} but not at step {s0}: {len(fixed)} "
             f"(and {len(right[s0] - right[s1])} the other way), of {len(before)}"]
    for q in fixed[:k]:
        question = before[q]["input"].split(SHOW_WORK)[0].rsplit("user\n", 1)[-1].strip()
        lines.append(f"  {question}  (answer {before[q]['gts']})")
        for step, rows in ((s0, before), (s1, after)):
            lines.append(f"    step {step:>2}: " + " ".join(rows[q]["output"].split())[:120])
    for step, rows in ((s0, before), (s1, after)):
        cut = sum(r.get("finish_reason") == "length" for r in rows.values())
        lines.append(f"step {step}: {cut} of {len(rows)} validation responses used the whole length budget")
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        extra = argv[argv.index("--") + 1:]
        argv = argv[: argv.index("--")]
    parser = argparse.ArgumentParser(prog="strive demo", description="A real GRPO run on the CPU in minutes.",
                                     epilog="Anything after `--` is passed to the trainer as key=value overrides, "
                                            "e.g. `strive demo -- actor_rollout_ref.actor.optim.lr=2e-5`.")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="strive_demo", help="run folder (logs, curves, data)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (FSDP ranks)")
    parser.add_argument("--gsm8k", default=None, help="folder with GSM8K train/test .jsonl or .parquet")
    args = parser.parse_args(argv)
    out_dir = os.path.abspath(os.path.expanduser(args.out))
    print(f"[strive demo] model {args.model}, {args.steps} GRPO steps on the CPU; output in {out_dir}", flush=True)
    from strive.models.loading import resolve_model_path
    from strive.trainer.main_ppo import main as train_main

    model = resolve_model_path(args.model)
    data_dir = prepare_data(out_dir, args.gsm8k, args.seed)
    jsonl = os.path.join(out_dir, "logs", "metrics.jsonl")
    if os.path.exists(jsonl):
        os.remove(jsonl)  # a fresh curve for every demo run
    dtype = compute_dtype()
    lr, checkpointing = PRESETS[dtype]
    print(f"[strive demo] this CPU computes in {dtype}: actor lr {lr}, gradient checkpointing "
          f"{'on' if checkpointing else 'off'} (the demo's settings for {dtype}, docs/demo.md)", flush=True)
    code = train_main(demo_overrides(data_dir, out_dir, model, args.steps, args.seed, args.workers, dtype) + extra)
    if code == 0:
        summarize(out_dir)
    return code


if __name__ == "__main__":
    sys.exit(main())
