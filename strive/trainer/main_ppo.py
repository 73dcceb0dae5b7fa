"""Entry point users call: `python -m strive.trainer.main_ppo [--config-path D --config-name N] [key=value ...]`.

Same command lines as verl's `verl.trainer.main_ppo` (only the module name changes). The config is resolved
and checked before anything heavy starts. What depends on the machine (a GPU to run on) and on the data (the
total step count) is filled in next; then the derived batch sizes and the notes on what strive inferred are
printed, and the config exactly as it runs is written to `<trainer.default_local_dir>/logs/config.yaml`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m strive.trainer.main_ppo", add_help=True,
                                     description="PPO/GRPO training with verl-compatible key=value overrides.")
    parser.add_argument("--config-path", default=None)
    parser.add_argument("--config-name", default=None)
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if a.startswith("-")]
    if unknown:
        parser.error(f"unknown option(s): {unknown}; overrides are key=value")
    return args, rest


def main(argv: list[str] | None = None) -> int:
    from strive.config import ConfigError, prepare

    args, overrides = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        run = prepare(overrides, args.config_path, args.config_name)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 1
    return run_ppo(run)


def run_ppo(run) -> int:
    """Resolve what depends on the machine and the data, print and save the config that runs, then train."""
    from strive.config import to_yaml
    from strive.engines.base import EngineUnavailable, check_engine
    from strive.trainer.checkpoint import log_dir

    cfg = run.config
    resolve_device(run)
    try:
        check_engine(cfg.actor_rollout_ref.rollout.name, cfg.trainer.device)
        quantization = cfg.actor_rollout_ref.rollout.quantization
        if quantization and cfg.trainer.device != "cuda":
            raise ValueError(f"actor_rollout_ref.rollout.quantization={quantization} needs CUDA (vLLM / SGLang on a "
                             f"GPU); this run uses trainer.device={cfg.trainer.device}")
    except (EngineUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    start = time.time()
    from strive.trainer.setup import load_data

    data = load_data(run)
    print(run.report(with_yaml=False), flush=True)
    os.makedirs(log_dir(cfg.trainer), exist_ok=True)
    with open(os.path.join(log_dir(cfg.trainer), "config.yaml"), "w") as fh:
        fh.write(to_yaml(cfg))
    code = train_with_restarts(run, data)
    if code == 0:
        print(f"[strive] done in {time.time() - start:.0f}s", flush=True)
    return code


def train_with_restarts(run, data) -> int:
    """Train; when a worker dies and trainer.max_restarts allows, tear Ray down and train again from the newest
    checkpoint this run completed (or from where the config says, when it has none yet)."""
    from strive.controller.group import WorkerDied
    from strive.trainer.checkpoint import plan_resume
    from strive.workers.checkpoint import CheckpointError

    trainer, initial = run.config.trainer, data.sampler.state_dict()
    last_saved: str | None = None
    for attempt in range(trainer.max_restarts + 1):
        try:
            resume_dir = plan_resume(trainer, run.sizes.world_size)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        data.sampler.load_state_dict(dict(initial))  # the checkpoint, if any, moves it on
        saved: list[str] = []
        try:
            _train_once(run, data, resume_dir, saved)
            return 0
        except WorkerDied as exc:
            last_saved = saved[-1] if saved else last_saved
            if attempt == trainer.max_restarts:
                raise
            print(f"[strive] restart {attempt + 1}/{trainer.max_restarts} (trainer.max_restarts) after: {exc}",
                  flush=True)
            _stop_ray(run.config)
            if last_saved is not None:
                trainer.resume_mode, trainer.resume_from_path = "resume_path", last_saved
    return 1


def _train_once(run, data, resume_dir: str | None, saved: list[str]) -> None:
    """One attempt: Ray, the workers, the loop. The last checkpoint it completed goes into `saved`, also when a
    worker dies, for the restart."""
    from strive.trainer.ppo import run_training
    from strive.trainer.setup import build_runtime

    runtime = build_runtime(run, data, resume_dir)
    try:
        run_training(runtime)
    finally:
        if runtime.last_saved:
            saved.append(runtime.last_saved)
        runtime.group.shutdown()
        if runtime.critic_group:
            runtime.critic_group.shutdown()


def _stop_ray(cfg) -> None:
    """Shut Ray down for a restart. A cluster this run started is started afresh the next time (address=local),
    rather than joining whatever other cluster this machine runs by then."""
    import ray

    if not ray.is_initialized():
        return
    try:
        from ray._private import worker

        node = getattr(worker, "_global_node", None)
        started_here = bool(node is not None and node.head)
    except Exception:
        started_here = False
    ray.shutdown()
    if started_here:
        cfg.extras["ray_kwargs.ray_init.address"] = "local"


def resolve_device(run) -> None:
    """trainer.device=cuda on a machine without a visible GPU runs on the CPU, with a note in the start-up report."""
    if run.config.trainer.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            run.config.trainer.device = "cpu"
            run.notes.append("trainer.device=cuda but no GPU is visible; running on the CPU instead "
                             "(set trainer.device=cpu to silence this)")


if __name__ == "__main__":
    sys.exit(main())
