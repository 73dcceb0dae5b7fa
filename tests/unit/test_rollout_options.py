"""Rollout keys that reach only some engines: the default TP on few ranks, hf's notes, quantisation's refusals.

    pytest -q tests/unit/test_rollout_options.py
"""

import pytest

from strive.config import ConfigError, prepare
from strive.trainer import main_ppo

BASE = ["data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4", "trainer.nnodes=1"]
TP = "actor_rollout_ref.rollout.tensor_model_parallel_size"


@pytest.mark.parametrize("engine", ["vllm", "sglang"])
def test_default_tp_shrinks_to_the_ranks_with_a_note(engine):
    run = prepare(BASE + ["trainer.n_gpus_per_node=1", f"actor_rollout_ref.rollout.name={engine}"])
    assert run.config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert any("tensor_model_parallel_size: the default 2 does not divide the 1 ranks; using 1" in n
               for n in run.notes)
    run = prepare(BASE + ["trainer.n_gpus_per_node=4", f"actor_rollout_ref.rollout.name={engine}"])
    assert run.config.actor_rollout_ref.rollout.tensor_model_parallel_size == 2  # divides: kept, no note
    assert not any("tensor_model_parallel_size" in n for n in run.notes)


def test_explicit_tp_that_does_not_divide_is_an_error():
    with pytest.raises(ConfigError, match="tensor_model_parallel_size=2 must divide"):
        prepare(BASE + ["trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.name=vllm", f"{TP}=2"])


def test_hf_notes_chunked_prefill_and_prefix_cache_only_when_set():
    run = prepare(BASE + ["trainer.n_gpus_per_node=1"])
    assert not any("enable_chunked_prefill" in n or "enable_prefix_caching" in n for n in run.notes)
    run = prepare(BASE + ["trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.enable_chunked_prefill=False",
                          "actor_rollout_ref.rollout.enable_prefix_caching=True"])
    notes = "\n".join(run.notes)
    assert "enable_chunked_prefill=False has no effect on the hf engine" in notes
    assert "enable_prefix_caching=True has no effect on the hf engine" in notes


def test_quantization_refused_on_hf():
    with pytest.raises(ConfigError, match="quantization=fp8: the hf engine does not quantise"):
        prepare(BASE + ["trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.quantization=fp8"])


def test_quantization_refused_without_cuda(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(main_ppo, "time", None)  # nothing past the preflight may run
    monkeypatch.setattr("strive.engines.base.check_engine", lambda name, device: None)
    code = main_ppo.main(BASE + ["trainer.n_gpus_per_node=1", "trainer.device=cpu", f"{TP}=1",
                                 "actor_rollout_ref.rollout.name=vllm",
                                 "actor_rollout_ref.rollout.quantization=fp8", f"trainer.default_local_dir={tmp_path}"])
    assert code == 1
    assert "quantization=fp8 needs CUDA" in capsys.readouterr().err
