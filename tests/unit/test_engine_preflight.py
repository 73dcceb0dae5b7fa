"""A run naming an engine that cannot start here stops before Ray or any worker, saying what to install."""

import importlib.util

import pytest

from strive.engines import base
from strive.trainer import main_ppo

COMMON = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]


def _without(monkeypatch, missing: str):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))


@pytest.mark.parametrize("engine,hint", [("sglang", 'pip install "strive[sglang]"'),
                                         ("vllm", 'pip install "strive[vllm]"')])
def test_missing_engine_library_names_the_install_command(monkeypatch, tmp_path, capsys, engine, hint):
    _without(monkeypatch, engine)
    monkeypatch.setattr(main_ppo, "time", None)  # build_runtime (Ray) must not be reached: it would need time.time
    code = main_ppo.main(COMMON + [f"actor_rollout_ref.rollout.name={engine}", f"trainer.default_local_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"rollout.name={engine} needs the '{engine}' package" in err and hint in err


def test_sglang_on_cpu_is_refused_before_start(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(base.EngineUnavailable, match="runs only with trainer.device=cuda"):
        base.check_engine("sglang", "cpu")
    base.check_engine("sglang", "cuda")
    base.check_engine("hf", "cpu")


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine; choose one of hf, vllm, sglang"):
        base.check_engine("trt", "cuda")
