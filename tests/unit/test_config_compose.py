"""verl-style YAML configs through Hydra's compose API (strive.config.compose): defaults lists with package
overrides (`actor@actor_rollout_ref.actor: dp_actor`), `_self_` order, `hydra.searchpath`, interpolations,
`~key` deletions and command-line overrides on top; errors name the file and the key. Skipped without
hydra-core, except the plain-YAML fallback's own checks."""

import textwrap

import pytest

from strive.config import ConfigError, build_config, load_config
from strive.config.compose import hydra_available

needs_hydra = pytest.mark.skipif(not hydra_available(), reason="hydra-core is not installed")


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def verl_layout(tmp_path):
    """A trainer file that mounts component files under packages, like verl's ppo_trainer.yaml, and a user
    file on top of it that lists `ppo_trainer` first and `_self_` last, like verl's multi-turn/DAPO examples."""
    base = tmp_path / "base"
    write(base, "actor/dp_actor.yaml", """
        _target_: verl.workers.config.FSDPActorConfig
        strategy: fsdp
        ppo_mini_batch_size: 64
        clip_ratio_high: 0.2
        optim:
          lr: 1e-6
        """)
    write(base, "rollout/rollout.yaml", """
        name: vllm
        n: 1
        temperature: 1.0
        response_length: ${oc.select:data.max_response_length,512}
        """)
    write(base, "trainer_base.yaml", """
        defaults:
          - actor@actor_rollout_ref.actor: dp_actor
          - rollout@actor_rollout_ref.rollout: rollout
          - _self_
        data:
          train_batch_size: 256
          max_response_length: 1024
        actor_rollout_ref:
          actor:
            ppo_mini_batch_size: 32
        """)
    user = tmp_path / "user"
    write(user, "dapo_like.yaml", f"""
        hydra:
          searchpath:
            - file://{base}
        defaults:
          - trainer_base
          - _self_
        data:
          gen_batch_size: ${{data.train_batch_size}}
          max_prompt_length: 128
        actor_rollout_ref:
          actor:
            clip_ratio_high: 0.28
          rollout:
            n: 8
        reward_model:
          reward_manager: dapo
        algorithm:
          filter_groups:
            _target_: verl.trainer.config.FilterGroupsConfig
            enable: true
            metric: acc
        """)
    return base, user


@needs_hydra
def test_defaults_packages_and_self_order(verl_layout):
    _, user = verl_layout
    cfg, explicit = build_config([], str(user), "dapo_like")
    arr = cfg.actor_rollout_ref
    assert arr.actor.optim.lr == 1e-6 and arr.actor.strategy == "fsdp"  # mounted from actor/dp_actor.yaml
    assert arr.actor.ppo_mini_batch_size == 32  # trainer_base's _self_ comes after its defaults
    assert arr.actor.clip_ratio_high == 0.28  # the user file's _self_ is last
    assert arr.rollout.n == 8 and arr.rollout.name == "vllm"
    assert arr.rollout.response_length == 1024  # ${oc.select:...} against the composed tree
    assert cfg.data.gen_batch_size == 256 and cfg.data.max_prompt_length == 128
    assert cfg.reward_model.reward_manager == "dapo" and cfg.algorithm.filter_groups.metric == "acc"
    assert "actor_rollout_ref.actor.clip_ratio_high" in explicit and "data.gen_batch_size" in explicit
    assert "critic.ppo_epochs" not in explicit  # only what the files set counts as set


@needs_hydra
def test_command_line_on_top_and_interpolations_follow_it(verl_layout):
    _, user = verl_layout
    cfg, _ = build_config(["data.train_batch_size=16", "actor_rollout_ref.rollout.n=4",
                           "~data.max_prompt_length", "+reward_model.reward_kwargs.max_resp_len=64"],
                          str(user), "dapo_like")
    assert cfg.data.train_batch_size == 16
    assert cfg.data.gen_batch_size == 16  # the file's ${data.train_batch_size} sees the override, as in verl
    assert cfg.actor_rollout_ref.rollout.n == 4
    assert cfg.data.max_prompt_length == 512  # deleted from the file: strive's (verl's) default holds
    assert cfg.reward_model.reward_kwargs == {"max_resp_len": 64}
    pinned, _ = build_config(["data.gen_batch_size=48"], str(user), "dapo_like")
    assert pinned.data.gen_batch_size == 48  # a command-line value beats the file's interpolation


@needs_hydra
def test_ppo_trainer_means_strives_defaults(tmp_path):
    write(tmp_path, "multiturn.yaml", """
        hydra:
          searchpath:
            - file://verl/trainer/config
        defaults:
          - ppo_trainer
          - _self_
        data:
          max_prompt_length: 1024
          return_raw_chat: true
        actor_rollout_ref:
          rollout:
            name: sglang
        """)
    cfg, explicit = build_config([], str(tmp_path), "multiturn")
    assert cfg.data.max_prompt_length == 1024 and cfg.actor_rollout_ref.rollout.name == "sglang"
    assert explicit == {"data.max_prompt_length", "data.return_raw_chat", "actor_rollout_ref.rollout.name"}


@needs_hydra
def test_errors_name_the_file_and_key(verl_layout, tmp_path):
    base, user = verl_layout
    write(base, "actor/typo_actor.yaml", "ppo_mini_bach_size: 4\n")
    write(user, "typo.yaml", f"""
        hydra:
          searchpath: [file://{base}]
        defaults:
          - trainer_base
          - override actor@actor_rollout_ref.actor: typo_actor
          - _self_
        """)
    with pytest.raises(ConfigError, match=r"typo\.yaml: unknown config key 'actor_rollout_ref\.actor\.ppo_mini_bach_size'"):
        build_config([], str(user), "typo")
    write(user, "missing.yaml", "defaults:\n  - rollout@actor_rollout_ref.rollout: no_such_rollout\n  - _self_\n")
    with pytest.raises(ConfigError, match=r"missing\.yaml: Hydra could not compose it.*no_such_rollout"):
        build_config([], str(user), "missing")
    write(user, "dangling.yaml", "data:\n  gen_batch_size: ${data.no_such_key}\n")
    with pytest.raises(ConfigError, match=r"dangling\.yaml: data\.gen_batch_size: cannot resolve"):
        build_config([], str(user), "dangling")
    with pytest.raises(ConfigError, match=r"~actor_rollout_ref\.rollout\.tools\.x: no such key in .*dapo_like\.yaml"):
        build_config(["~actor_rollout_ref.rollout.tools.x"], str(user), "dapo_like")


@needs_hydra
def test_deleting_inside_a_free_form_mapping(tmp_path):
    write(tmp_path, "exp.yaml", """
        actor_rollout_ref:
          model:
            override_config:
              attention_dropout: 0.0
              embd_pdrop: 0.0
        """)
    cfg = load_config(["~actor_rollout_ref.model.override_config.embd_pdrop"], str(tmp_path), "exp")
    assert cfg.actor_rollout_ref.model.override_config == {"attention_dropout": 0.0}


def test_plain_yaml_fallback_refuses_what_needs_hydra(tmp_path, monkeypatch):
    from strive.config import compose

    monkeypatch.setattr(compose, "hydra_available", lambda: False)
    write(tmp_path, "simple.yaml", "defaults:\n  - ppo_trainer\n  - _self_\ndata:\n  train_batch_size: 32\n")
    assert build_config([], str(tmp_path), "simple")[0].data.train_batch_size == 32
    write(tmp_path, "grouped.yaml", "defaults:\n  - actor@actor_rollout_ref.actor: dp_actor\n  - _self_\n")
    with pytest.raises(ConfigError, match=r"grouped\.yaml: Hydra defaults entry .* needs hydra-core"):
        build_config([], str(tmp_path), "grouped")
    write(tmp_path, "interp.yaml", "data:\n  gen_batch_size: ${data.train_batch_size}\n")
    with pytest.raises(ConfigError, match=r"interp\.yaml: data\.gen_batch_size=.* needs hydra-core"):
        build_config([], str(tmp_path), "interp")


@needs_hydra
def test_a_dapo_recipe_style_file(tmp_path):
    """The shape of verl's DAPO recipe config: ppo_trainer first, recipe keys with `_target_` hints, the
    overlong buffer in the recipe's spelling, gen_batch_size interpolated."""
    from strive.config import prepare
    from strive.reward.overlong import OverlongBuffer, overlong_from_kwargs

    write(tmp_path, "dapo_trainer.yaml", """
        hydra:
          searchpath:
            - file://verl/trainer/config
        defaults:
          - ppo_trainer
          - _self_
        data:
          gen_batch_size: ${data.train_batch_size}
        reward_model:
          reward_manager: dapo
          overlong_buffer:
            enable: False
            len: 0
            penalty_factor: 0.0
            log: False
        algorithm:
          filter_groups:
            _target_: verl.trainer.config.FilterGroupsConfig
            enable: False
            metric: null
            max_num_gen_batches: 0
        """)
    run = prepare(["data.train_batch_size=8", "data.gen_batch_size=24", "data.max_response_length=256",
                   "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.n=4",
                   "algorithm.adv_estimator=grpo", "algorithm.filter_groups.enable=True",
                   "algorithm.filter_groups.metric=acc", "reward_model.overlong_buffer.enable=True",
                   "reward_model.overlong_buffer.len=64", "reward_model.overlong_buffer.penalty_factor=1.0"],
                  str(tmp_path), "dapo_trainer")
    cfg = run.config
    assert cfg.data.gen_batch_size == 24 and cfg.algorithm.filter_groups.metric == "acc"
    assert overlong_from_kwargs(cfg.reward_model.reward_kwargs) == OverlongBuffer(256, 64, 1.0, False)
