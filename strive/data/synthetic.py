"""Arithmetic word problems in GSM8K's format, generated locally (no dataset hub needed).

Each row has verl's columns (see strive/data/gsm8k.py) and a worked solution ending in `#### N`, so the GSM8K
scorer grades it; no test question is also a training question. The problems are small on purpose: SmolLM2-135M
gets `a + b =` right most of the time when it writes the sum out, but asked for an answer it mostly guesses. With
the demo's prompt (`--show_work`: the calculation first; greedy, 14% right before training) GRPO teaches it to
write the calculation and carry its result to `####`, so right answers on the held-out problems rise within
minutes on a CPU (docs/demo.md).

    python -m strive.data.synthetic --out_dir ~/data/arithmetic --train 2000 --test 200
"""

from __future__ import annotations

import argparse
import os
import random

from strive.data.gsm8k import write_parquet

DATA_SOURCE = "strive/arithmetic"
INSTRUCTION = 'End your reply with "#### " followed by the answer as a number.'
# The demo's prompt (strive/demo.py): asking for the calculation first is what lets the model's own arithmetic show.
SHOW_WORK = 'Write the calculation, then end your reply with "#### " followed by the answer as a number.'
NAMES = ["Ann", "Ben", "Carla", "Dev", "Emma", "Finn", "Gia", "Hugo", "Ivy", "Jon", "Kai", "Lena", "Mia", "Noah"]
ITEMS = ["apples", "books", "coins", "marbles", "pencils", "stickers", "cookies", "shells", "cards", "stamps"]


def _problem(rng: random.Random) -> tuple[str, str, int]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    kind = rng.choice(["add", "sub", "mul"])
    if kind == "add":
        q = f"{name} has {a} {item} and gets {b} more. How many {item} does {name} have now?"
        return q, f"{name} has {a} + {b} = {a + b} {item}.", a + b
    if kind == "sub":
        a, b = max(a, b), min(a, b)
        q = f"{name} had {a} {item} and gave away {b}. How many {item} are left?"
        return q, f"{name} has {a} - {b} = {a - b} {item} left.", a - b
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = f"{name} has {a} bags with {b} {item} in each bag. How many {item} are there in total?"
    return q, f"There are {a} * {b} = {a * b} {item}.", a * b


def make_rows(n: int, split: str, seed: int, exclude: frozenset[str] = frozenset(),
              instruction: str = INSTRUCTION) -> list[dict]:
    """`n` problems; none whose question is in `exclude` (so a test split holds only unseen problems)."""
    rng = random.Random(f"{seed}-{split}")
    rows: list[dict] = []
    while len(rows) < n:
        question, work, answer = _problem(rng)
        if question in exclude:
            continue
        i = len(rows)
        rows.append({
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": question + " " + instruction}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(answer)},
            "extra_info": {"split": split, "index": i, "answer": f"{work}\n#### {answer}", "question": question},
        })
    return rows


def write_dataset(out_dir: str, n_train: int = 2000, n_test: int = 200, seed: int = 0,
                  instruction: str = INSTRUCTION) -> tuple[str, str]:
    out_dir = os.path.expanduser(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    train = os.path.join(out_dir, "train.parquet")
    test = os.path.join(out_dir, "test.parquet")
    train_rows = make_rows(n_train, "train", seed, instruction=instruction)
    write_parquet(train_rows, train)
    seen = frozenset(row["extra_info"]["question"] for row in train_rows)
    write_parquet(make_rows(n_test, "test", seed, exclude=seen, instruction=instruction), test)
    return train, test


def write_token_dataset(out_dir: str, n_train: int, n_test: int, prompt_words: int, vocab_size: int,
                        seed: int = 0) -> tuple[str, str]:
    """Prompts of random words `tK` for random-weight models (scored by strive/token_set)."""
    rng = random.Random(seed)
    paths = []
    for split, n in (("train", n_train), ("test", n_test)):
        rows = [{"data_source": "strive/token_set",
                 "prompt": [{"role": "user", "content": " ".join(f"t{rng.randrange(vocab_size - 3)}"
                                                                  for _ in range(prompt_words))}],
                 "ability": "synthetic", "reward_model": {"style": "rule", "ground_truth": ""},
                 "extra_info": {"split": split, "index": i}} for i in range(n)]
        os.makedirs(os.path.expanduser(out_dir), exist_ok=True)
        path = os.path.join(os.path.expanduser(out_dir), f"{split}.parquet")
        write_parquet(rows, path)
        paths.append(path)
    return paths[0], paths[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write arithmetic word problems in GSM8K's parquet format.")
    parser.add_argument("--out_dir", default="~/data/arithmetic")
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show_work", action="store_true", help="ask for the calculation first (the demo's prompt)")
    args = parser.parse_args(argv)
    train, test = write_dataset(args.out_dir, args.train, args.test, args.seed,
                                SHOW_WORK if args.show_work else INSTRUCTION)
    print(f"train: {args.train} rows -> {train}\ntest: {args.test} rows -> {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
