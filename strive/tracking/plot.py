"""Command line for a run's curves and reward table, read from the `file` backend's metrics.jsonl.

    python -m strive.tracking.plot runs/gsm8k/metrics.jsonl [--out curves.png] [--keys actor/entropy 'val-core/*']

Prints the reward table, writes the PNG (default: curves.png beside the metrics) and prints its path.
The work is in `strive.tracking.report`; this module is kept out of the package's imports so `python -m` runs it
once.
"""

from __future__ import annotations

import argparse

from strive.tracking.report import plot_curves, reward_table


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(prog="python -m strive.tracking.plot", description=__doc__.splitlines()[0])
    parser.add_argument("metrics", help="metrics.jsonl, or the run directory holding it")
    parser.add_argument("--out", default=None, help="PNG to write (default: curves.png beside the metrics)")
    parser.add_argument("--keys", nargs="+", default=None, help="metric names or glob patterns, one panel each")
    parser.add_argument("--every", type=int, default=1, help="show every N-th step in the reward table")
    parser.add_argument("--title", default=None, help="figure title (default: the experiment name)")
    args = parser.parse_args(argv)
    print(reward_table(args.metrics, every=args.every))
    out = plot_curves(args.metrics, args.out, keys=args.keys, title=args.title)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
