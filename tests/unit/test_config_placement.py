"""Split placement's keys (strive/config/placement.py) and how slots are divided between pools (setup.split_slots)."""

from __future__ import annotations

import pytest

from strive.config import ConfigError, prepare
from strive.config.placement import is_split, max_staleness, rollout_world, transfer_timeout_s

CPU = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.name=hf",
       "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2"]
SPLIT = ["actor_rollout_ref.hybrid_engine=False"]


def test_colocated_default_is_synchronous():
    cfg = prepare(CPU).config
    assert not is_split(cfg) and max_staleness(cfg) == 0 and transfer_timeout_s(cfg) == 300.0


def test_split_defaults_to_one_step_off_and_says_so():
    run = prepare(CPU + SPLIT + ["rollout.n_gpus_per_node=2"])
    assert is_split(run.config) and max_staleness(run.config) == 1 and rollout_world(run.config) == 2
    assert any("split placement" in n and "one-step-off" in n for n in run.notes)


def test_staleness_without_split_placement_names_the_keys():
    with pytest.raises(ConfigError, match=r"trainer.max_staleness=2 .*actor_rollout_ref.hybrid_engine=False"):
        prepare(CPU + ["trainer.max_staleness=2"])


@pytest.mark.parametrize("bad, match", [
    (["rollout.n_gpus_per_node=0"], "rollout.nnodes × rollout.n_gpus_per_node = 1 × 0"),
    (["trainer.max_staleness=-1"], "trainer.max_staleness=-1 must be ≥ 0"),
    (["algorithm.filter_groups.enable=True", "actor_rollout_ref.rollout.n=2"], "algorithm.filter_groups.enable=True is not supported with split"),
    (["actor_rollout_ref.rollout.multi_turn.enable=True", "actor_rollout_ref.rollout.multi_turn.router=least_loaded"],
     "multi_turn.router=least_loaded is not supported with split placement .* or multi_turn.router=static"),
    (["actor_rollout_ref.rollout.multi_turn.enable=True", "async_training.partial_rollout=True"],
     "async_training.partial_rollout=True with actor_rollout_ref.rollout.multi_turn.enable=True is not supported"),
])
def test_split_placement_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        prepare(CPU + SPLIT + bad)


def test_timeout_defaults_by_device():
    assert transfer_timeout_s(prepare(CPU + SPLIT + ["trainer.weight_transfer_timeout_s=7"]).config) == 7.0


def test_split_slots_gives_each_pool_its_share_of_every_node():
    from strive.controller.cluster import Placement
    from strive.trainer.setup import split_slots

    nodes = Placement(["a", "a", "a", "b", "b", "b"], "GPU")  # 2 nodes × (2 trainer + 1 rollout)
    trainer, rollout = split_slots(nodes, [2, 1])
    assert trainer.node_ids == ["a", "a", "b", "b"] and rollout.node_ids == ["a", "b"]
    main, critic, engines = split_slots(Placement(["a"] * 3, "CPU"), [1, 1, 1])
    assert main.node_ids == critic.node_ids == engines.node_ids == ["a"]


def test_partial_rollout_is_off_by_default_and_noted_when_on():
    from strive.config.placement import PartialSettings, partial_settings

    assert partial_settings(prepare(CPU + SPLIT).config) is None
    run = prepare(CPU + SPLIT + ["async_training.partial_rollout=True", "async_training.partial_rollout_chunk=16"])
    assert partial_settings(run.config) == PartialSettings("continue", 16)
    assert any("partial rollout" in n and "partial_rollout_chunk" in n for n in run.notes)


@pytest.mark.parametrize("extra, match", [
    ([], r"async_training.partial_rollout=True .*hybrid_engine=False and trainer.max_staleness ≥ 1"),
    (SPLIT + ["trainer.max_staleness=0"], r"async_training.partial_rollout=True .*max_staleness=0\)"),
    (SPLIT + ["async_training.partial_rollout_mode=abort"], "partial_rollout_mode='abort': choose one of continue, resubmit"),
    (SPLIT + ["async_training.partial_rollout_chunk=0"], r"partial_rollout_chunk=0 must be ≥ 1"),
])
def test_partial_rollout_errors_name_the_keys(extra, match):
    with pytest.raises(ConfigError, match=match):
        prepare(CPU + ["async_training.partial_rollout=True"] + extra)


GPU_SPLIT = ["trainer.device=cuda", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.name=hf",
             "data.train_batch_size=2", "actor_rollout_ref.actor.ppo_mini_batch_size=2"] + SPLIT


def test_sharing_the_trainers_gpu_is_noted_and_sends_through_host_memory():
    from strive.config.placement import shares_gpus

    run = prepare(GPU_SPLIT + ["rollout.share_trainer_gpus=True"])
    assert shares_gpus(run.config) and any("shares its GPU with a trainer process" in n for n in run.notes)
    assert not shares_gpus(prepare(GPU_SPLIT).config)
    cpu = prepare(CPU + SPLIT + ["rollout.share_trainer_gpus=True"])
    assert not shares_gpus(cpu.config) and any("no effect with trainer.device=cpu" in n for n in cpu.notes)


@pytest.mark.parametrize("extra, match", [
    (["actor_rollout_ref.hybrid_engine=True"], "share_trainer_gpus=True places the rollout pool of split placement"),
    (["rollout.n_gpus_per_node=2"], "rollout.n_gpus_per_node=2"),
    (["trainer.colocate_critic=False", "algorithm.adv_estimator=gae"], "trainer.colocate_critic=False"),
])
def test_sharing_errors_name_the_keys(extra, match):
    with pytest.raises(ConfigError, match=match):
        prepare(GPU_SPLIT + ["rollout.share_trainer_gpus=True"] + extra)


def test_partial_rollout_settings_without_the_switch_are_noted():
    notes = prepare(CPU + ["async_training.partial_rollout_chunk=8"]).notes
    assert any("async_training.partial_rollout_chunk: no effect without async_training.partial_rollout=True" in n
               for n in notes)
