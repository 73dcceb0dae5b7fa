"""Why a GSM8K response scored 0: format, arithmetic or length. Reads generation dumps of a run.

A strict GSM8K score mixes two skills: writing the answer as `#### N`, and getting N right. This splits the
responses of a dump (trainer.validation_data_dir or trainer.rollout_data_dir, one STEP.jsonl per step) into:

- strict_correct: the score the run logged (last `#### N` in the final 300 characters equals the answer);
- strict_format: a `#### N` was found there, right or wrong;
- near_miss: a `#### N` was found and equals the answer as a number but not as a string (`18.`, `18.00`);
- flexible_correct: the last number in the final 300 characters equals the answer (the arithmetic was right,
  whatever the format), as verl's `flexible` method scores it (`18.` is wrong for 18);
- answer_right: the answer the response commits to equals the truth as a number (`18.`, `18.00` count): its last
  `#### N`, else its last `\\boxed{N}`, else its last number. This is the arithmetic alone, the ceiling a perfect
  format would give;
- truncated: the response has at least --max-tokens tokens (cut before it could finish).

    python bench/gsm8k_dump_stats.py RUN_DIR/val_dump [--max-tokens 400] [--model DIR] [--json OUT]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from strive.reward.gsm8k import compute_score, extract_solution  # noqa: E402


_BOXED_RE = re.compile(r"\\boxed\{\s*\\?\$?(\-?[0-9][0-9\.\,]*)")


def _as_number(text: str | None) -> float | None:
    try:
        return float(text.replace(",", "").rstrip(".")) if text else None
    except ValueError:
        return None


def _committed_answer(output: str, strict: str | None) -> str | None:
    if strict is not None:
        return strict
    boxed = _BOXED_RE.findall(output)
    return boxed[-1] if boxed else extract_solution(output, "flexible")


def classify(output: str, truth: str) -> dict[str, bool]:
    strict = extract_solution(output, "strict")
    return {
        "strict_correct": strict == truth,  # compute_score's strict rule, on the answer extracted above
        "strict_format": strict is not None,
        "near_miss": strict is not None and strict != truth and _as_number(strict) == _as_number(truth),
        "flexible_correct": compute_score(output, truth, method="flexible") == 1.0,
        "answer_right": _as_number(_committed_answer(output, strict)) == _as_number(truth),
    }


def step_stats(path: str, tokenizer, max_tokens: int) -> dict[str, float]:
    with open(path) as fh:
        rows = [json.loads(line) for line in fh]
    counts: dict[str, float] = {}
    for row in rows:
        flags = classify(row["output"], row["gts"])
        if tokenizer is not None:
            flags["truncated"] = len(tokenizer(row["output"])["input_ids"]) >= max_tokens
        for key, value in flags.items():
            counts[key] = counts.get(key, 0) + int(value)
    stats = {key: round(value / len(rows), 3) for key, value in counts.items()}
    stats["responses"] = len(rows)
    stats["logged_score"] = round(sum(row["score"] for row in rows) / len(rows), 3)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dump_dir")
    parser.add_argument("--max-tokens", type=int, default=400)
    parser.add_argument("--model", default=None, help="tokenizer directory, to count truncated responses")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    tokenizer = None
    if args.model:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
    files = sorted(glob.glob(os.path.join(args.dump_dir, "*.jsonl")), key=lambda p: int(os.path.basename(p)[:-6]))
    if not files:
        sys.exit(f"gsm8k_dump_stats: no STEP.jsonl files in {args.dump_dir}")
    table = {int(os.path.basename(p)[:-6]): step_stats(p, tokenizer, args.max_tokens) for p in files}
    keys = [k for k in next(iter(table.values())) if k not in ("responses", "logged_score")]
    print("| step | " + " | ".join(keys) + " | responses |")
    print("|---" * (len(keys) + 2) + "|")
    for step, stats in table.items():
        print(f"| {step} | " + " | ".join(f"{stats[k]:.3f}" for k in keys) + f" | {stats['responses']} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(table, fh, indent=1)


if __name__ == "__main__":
    main()
