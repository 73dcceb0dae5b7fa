"""How a run starts its rollout engine (`strive.engines.base.start_engine`) and what the engine table decides.

For rollout.name=hf: which decode path runs (plain loop or fast path) under engine_kwargs.hf.fast, the one line
that says so, the errors for options and models the fast path cannot take; and the table's `tensor_parallel` flag,
which replaced the engine-name tests in the config's notes and in the rollout worker's EngineSpec. CPU, tiny models.

    pytest tests/integration/test_engine_start.py -q
"""

import json

import pytest

from strive.config import ConfigError, prepare
from strive.engines import base
from strive.engines.base import EngineSpec, SamplingParams, start_engine
from strive.engines.fast import engine as engine_module
from strive.engines.fast import options
from strive.engines.fast.engine import FastHFEngine
from strive.engines.hf import HFEngine

PROMPTS = [[5, 17, 3], [9], [40, 41, 42, 43, 44, 45]]
LINE = "[strive] rollout engine hf: "


def spec(model_dir, **overrides) -> EngineSpec:
    return EngineSpec(**{"model_path": model_dir, "dtype": "float32", "max_num_seqs": 4, **overrides})


@pytest.fixture
def gpt2_dir(tmp_path):
    """A model directory that only says, in config.json, that it is a model_type the fast path lacks."""
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return str(tmp_path)


def test_auto_on_cpu_runs_the_plain_loop_and_says_why(tiny_model_dir, capsys):
    engine = start_engine("hf", spec(tiny_model_dir))
    assert type(engine) is HFEngine
    assert capsys.readouterr().out == LINE + "plain decode loop (engine_kwargs.hf.fast=auto: device is cpu)\n"
    params = SamplingParams(max_new_tokens=8, n=2, seed=1)
    direct = HFEngine(spec(tiny_model_dir)).generate(PROMPTS, params)
    out = engine.generate(PROMPTS, params)
    assert [c.token_ids for c in out] == [c.token_ids for c in direct]
    assert [c.logprobs for c in out] == [c.logprobs for c in direct]


def test_on_runs_the_fast_path_on_cpu(tiny_model_dir, capsys):
    engine = start_engine("hf", spec(tiny_model_dir, engine_kwargs={"fast": "on"}))
    assert isinstance(engine, FastHFEngine) and engine.fast is not None and not engine.fast.use_graphs
    assert capsys.readouterr().out == LINE + "fast decode path (engine_kwargs.hf.fast=on)\n"
    assert all(c.token_ids for c in engine.generate(PROMPTS, SamplingParams(max_new_tokens=4, seed=0)))


def test_off_runs_the_plain_loop_and_announce_false_prints_nothing(tiny_qwen_dir, capsys):
    engine = start_engine("hf", spec(tiny_qwen_dir, engine_kwargs={"fast": "off"}), announce=False)
    assert type(engine) is HFEngine and not hasattr(engine, "fast")
    assert capsys.readouterr().out == ""


def test_choice_on_cuda_follows_the_model_type(tiny_qwen_dir, gpt2_dir):
    """Decided before loading, from config.json: no GPU needed to check it."""
    fast = options.choose(spec(tiny_qwen_dir, device="cuda:1"))
    assert fast.fast and fast.reason == "engine_kwargs.hf.fast=auto: device is cuda, model_type 'qwen2'"
    plain = options.choose(spec(gpt2_dir, device="cuda"))
    assert not plain.fast and "model_type 'gpt2'" in plain.reason


def test_on_with_an_unsupported_model_type_names_the_key_before_loading(gpt2_dir):
    # gpt2_dir holds no weights: the error must come from config.json, before any loading
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf\.fast=on, but the fast path does not support "
                                         r"model_type 'gpt2'.*use fast=auto\|off"):
        start_engine("hf", spec(gpt2_dir, engine_kwargs={"fast": "on"}))


@pytest.mark.parametrize("fast", ["off", "auto"])
def test_unknown_hf_keys_are_refused_with_the_plain_engine_too(tiny_model_dir, fast):
    with pytest.raises(ValueError, match=r"engine_kwargs\.hf: unknown keys \['fast_typo'\]"):
        start_engine("hf", spec(tiny_model_dir, engine_kwargs={"fast": fast, "fast_typo": 1}))
    with pytest.raises(ValueError, match="auto, on or off"):
        start_engine("hf", spec(tiny_model_dir, engine_kwargs={"fast": "sometimes"}))


def test_auto_falls_back_when_the_loaded_model_is_unsupported(tiny_model_dir, monkeypatch, capsys):
    """config.json passes, the full check on the loaded model does not: the plain loop runs and the line says why."""
    monkeypatch.setattr(options, "choose", lambda s: options.Choice(True, "as if on cuda", options.FastOptions()))
    monkeypatch.setattr(engine_module, "unsupported_reason", lambda model: "rope_type 'dynamic'")
    engine = start_engine("hf", spec(tiny_model_dir))
    assert isinstance(engine, FastHFEngine) and engine.fast is None
    assert capsys.readouterr().out == LINE + ("plain decode loop (engine_kwargs.hf.fast=auto: the fast path does "
                                              "not support rope_type 'dynamic')\n")


def test_unknown_engine_name():
    with pytest.raises(ValueError, match="unknown engine"):
        start_engine("trt", EngineSpec(model_path="unused"))


# ---- the engine table's tensor_parallel flag ----------------------------------------------------------------------


TP2 = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=8",
       "actor_rollout_ref.rollout.tensor_model_parallel_size=2"]


def test_tensor_parallel_flag_drives_the_config_note(monkeypatch):
    run = prepare(TP2)  # hf: tensor_parallel=False, so tp=2 on one GPU is only a note
    assert any("tensor_model_parallel_size=2 is ignored by the hf engine" in n for n in run.notes)
    monkeypatch.setitem(base.ENGINES, "hf", base.ENGINES["hf"]._replace(tensor_parallel=True))
    with pytest.raises(ConfigError, match="tensor_model_parallel_size=2 must divide"):
        prepare(TP2)


def test_tensor_parallel_flag_drives_the_engine_spec(tiny_model_dir, monkeypatch):
    import torch

    from strive.workers.rollout import engine_spec

    overrides = TP2 + [f"actor_rollout_ref.model.path={tiny_model_dir}"]
    cfg = prepare(overrides).config.actor_rollout_ref
    assert engine_spec(cfg, torch.device("cpu"), [1], 0, seed=0).tensor_parallel_size == 1
    monkeypatch.setitem(base.ENGINES, "hf", base.ENGINES["hf"]._replace(tensor_parallel=True))
    assert engine_spec(cfg, torch.device("cpu"), [1], 0, seed=0).tensor_parallel_size == 2


def test_rollout_worker_starts_its_engine_through_start_engine(tiny_model_dir, capsys):
    """The worker's path: the config's engine_kwargs.hf reach the choice, and the line is printed (no process group
    here, so this process counts as rank 0)."""
    import torch

    from strive.workers.rollout import RolloutWorker

    cfg = prepare([f"actor_rollout_ref.model.path={tiny_model_dir}", "actor_rollout_ref.rollout.dtype=float32",
                   "+actor_rollout_ref.rollout.engine_kwargs.hf.fast=on"]).config.actor_rollout_ref
    worker = RolloutWorker(cfg, torch.device("cpu"), [1], 0, seed=0)
    assert isinstance(worker.engine, FastHFEngine)
    assert capsys.readouterr().out == LINE + "fast decode path (engine_kwargs.hf.fast=on)\n"
