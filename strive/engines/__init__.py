"""Rollout engines behind one Protocol; see base.py. Nothing heavy is imported here."""

from strive.engines.base import (Completion, EngineUnavailable, RolloutEngine, SamplingParams, load_engine_class,
                                 start_engine)

__all__ = ["Completion", "EngineUnavailable", "RolloutEngine", "SamplingParams", "load_engine_class", "start_engine"]
