"""The `strive` command: one entry point with a subcommand per job.

    strive config [--config-path DIR --config-name NAME] [key=value ...]   # resolved config + derived sizes
    strive config --explain actor_rollout_ref.actor.ppo_mini_batch_size    # what a key means
    strive config --unsupported                                            # keys refused or without effect
    strive train [key=value ...]                                           # same as python -m strive.trainer.main_ppo

Subcommands import their heavy dependencies only when run.
"""

from __future__ import annotations

import argparse
import sys


def _split_config_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="strive config", description="Print the resolved config and derived sizes.")
    parser.add_argument("--config-path", default=None, help="folder holding the YAML file")
    parser.add_argument("--config-name", default=None, help="YAML file name (with or without .yaml)")
    parser.add_argument("--explain", metavar="KEY", action="append", default=[], help="describe a key and exit")
    parser.add_argument("--no-yaml", action="store_true", help="print only the derived sizes and notes")
    parser.add_argument("--unsupported", action="store_true",
                        help="print the keys strive refuses or accepts without effect, and exit")
    return parser.parse_known_args(argv)


def cmd_config(argv: list[str]) -> int:
    from strive.config import ConfigError, explain, prepare, support_table

    args, overrides = _split_config_args(argv)
    if args.unsupported:
        print(support_table())
        return 0
    if args.explain:
        for key in args.explain:
            try:
                print(explain(key))
            except KeyError:
                print(f"unknown key: {key}", file=sys.stderr)
                return 2
        return 0
    bad = [o for o in overrides if o.startswith("-")]
    if bad:
        print(f"strive config: unknown option(s) {bad}", file=sys.stderr)
        return 2
    try:
        run = prepare(overrides, args.config_path, args.config_name)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
    print(run.report(with_yaml=not args.no_yaml))
    return 0


def cmd_train(argv: list[str]) -> int:
    from strive.trainer.main_ppo import main as train_main

    return train_main(argv)


def cmd_merge(argv: list[str]) -> int:
    from strive.trainer.merge import main as merge_main

    return merge_main(argv)


def cmd_models(argv: list[str]) -> int:
    from strive.models.fetch import main as models_main

    return models_main(argv)


def cmd_demo(argv: list[str]) -> int:
    from strive.demo import main as demo_main

    return demo_main(argv)


COMMANDS = {"config": cmd_config, "train": cmd_train, "merge": cmd_merge, "models": cmd_models, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__.strip())
        print("\ncommands: " + ", ".join(COMMANDS))
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
