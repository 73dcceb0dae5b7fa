"""Every config key is used, refused, or noted (strive/config/support.py), and the table behaves as documented.

"Used" is decided by a source scan: some file under strive/ outside the config package's schema and resolve
modules reads `.<field name>` (an attribute read, not an assignment), or the key is listed in
CONSUMED_BY_CONFIG. The scan goes by field name, so a name read for one key (e.g. `.enable`) also counts for
every other key of that name; the table and the tests of each implemented key cover what it cannot see.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import pathlib
import re
import subprocess
import sys

import pytest

import strive
from strive.config import ConfigError, prepare
from strive.config.schema import StriveConfig
from strive.config.sections import TrainerConfig
from strive.config.support import CONSUMED_BY_CONFIG, RULES, leaf_keys, rule_for, support_table

# Files that declare or merely copy keys; reading a field there does not make it do anything.
NOT_USE = {"schema.py", "sections.py", "actor_rollout_ref.py", "common.py", "resolve.py", "loader.py", "report.py",
           "support.py"}


def _source() -> str:
    root = pathlib.Path(strive.__file__).parent
    return "\n".join(p.read_text() for p in root.rglob("*.py")
                     if not (p.parent.name == "config" and p.name in NOT_USE))


def _read_in(source: str, key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return re.search(rf"\.{name}\b(?!\s*=[^=])", source) is not None


def unaccounted(cls: type = StriveConfig) -> list[str]:
    source = _source()
    return [k for k in leaf_keys(cls) if rule_for(k) is None and _read_in(source, k)
            is False and not any(fnmatch.fnmatchcase(k, p) for p in CONSUMED_BY_CONFIG)]


def test_every_key_is_used_refused_or_noted():
    assert unaccounted() == []


@dataclasses.dataclass
class _DummyTrainer(TrainerConfig):
    zz_dummy_never_read: int = 0
    """A key no code reads."""


@dataclasses.dataclass
class _DummyTree(StriveConfig):
    trainer: _DummyTrainer = dataclasses.field(default_factory=_DummyTrainer)
    """As StriveConfig.trainer, plus one unused key."""


def test_walk_fails_on_a_dummy_unused_key():
    assert "trainer.zz_dummy_never_read" in leaf_keys(_DummyTree)
    assert "trainer.zz_dummy_never_read" in unaccounted(_DummyTree)


def test_every_rule_matches_some_key():
    keys = leaf_keys()
    dead = [r.pattern for r in RULES if not any(rule_for(k) is r for k in keys)]
    assert dead == []


@pytest.mark.parametrize("override, message", [
    ("actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.strategy=megatron: strive trains with FSDP2"),
    ("actor_rollout_ref.rollout.multi_turn.interaction_config_path=/i.yaml", "interactions (a simulated user"),
    ("actor_rollout_ref.rollout.multi_turn.format=gpt-oss", "format=gpt-oss: strive parses the hermes"),
    ("actor_rollout_ref.rollout.skip_rollout=True", "skip_rollout=True: replaying dumped rollouts"),
    ("reward_model.sandbox_fusion.url=http://x:8080/run_code", "sandbox_fusion.url=http://x:8080/run_code"),
    ("data.sampler.class_path=my.py", "data.sampler.class_path=my.py: curriculum samplers"),
    ("actor_rollout_ref.actor.fsdp_config.ulysses_sequence_parallel_size=2", "Ulysses"),
    ("actor_rollout_ref.actor.ulysses_sequence_parallel_size=2", "Ulysses"),
    ("critic.model.lora_rank=8", "critic.model.lora_rank=8: LoRA on the critic is not implemented"),
    ("reward_model.enable_resource_pool=True", "reward_model.enable_resource_pool=True: the reward model is "
     "colocated"),
    ("reward_model.rollout={name: vllm}", "reward_model.rollout={'name': 'vllm'}: verl's generative reward model"),
    ("reward_model.reward_manager=prime", "reward_model.reward_manager=prime: strive has the naive and dapo"),
])
def test_refused_keys_stop_the_run_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare([override])


def test_refusals_are_listed_together():
    with pytest.raises(ConfigError) as err:
        prepare(["actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.rollout.skip_rollout=True"])
    assert "actor.strategy=megatron" in str(err.value) and "skip_rollout=True" in str(err.value)


def test_allowed_and_default_values_pass_silently():
    run = prepare(["actor_rollout_ref.actor.strategy=fsdp2", "critic.strategy=fsdp",
                   "actor_rollout_ref.rollout.multi_turn.enable=False", "actor_rollout_ref.rollout.over_sample_rate=0"])
    assert not [n for n in run.notes if "has no effect" in n]


@pytest.mark.parametrize("override, key", [
    ("actor_rollout_ref.rollout.over_sample_rate=0.1", "actor_rollout_ref.rollout.over_sample_rate=0.1"),
    ("actor_rollout_ref.rollout.checkpoint_engine.backend=nccl", "actor_rollout_ref.rollout.checkpoint_engine="),
    ("actor_rollout_ref.actor.checkpoint.async_save=True", "actor_rollout_ref.actor.checkpoint.async_save=True"),
    ("data.image_key=pics", "data.image_key=pics"),
    ("actor_rollout_ref.model.use_liger=True", "actor_rollout_ref.model.use_liger=True"),
    ("reward_model.model.path=/rm", "reward_model.model.path=/rm"),
    ("critic.model.tokenizer_path=/tok", "critic.model.tokenizer_path=/tok"),
])
def test_noted_keys_run_with_a_note(override, key):
    notes = prepare([override]).notes
    assert any(n.startswith(key) and "has no effect in strive" in n for n in notes), notes


def test_cli_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "strive.cli", "config", "--unsupported"], capture_output=True,
                         text=True, check=True).stdout
    assert out == support_table() + "\n"
    assert "actor_rollout_ref.actor.strategy" in out and "refused" in out and "no effect" in out


def test_optim_clip_grad_is_an_alias_of_grad_clip():
    run = prepare(["actor_rollout_ref.actor.optim.clip_grad=0.5", "critic.optim.clip_grad=2.0"])
    assert run.config.actor_rollout_ref.actor.grad_clip == 0.5 and run.config.critic.grad_clip == 2.0
    assert any("optim.clip_grad=0.5: used as actor_rollout_ref.actor.grad_clip" in n for n in run.notes)
    run = prepare(["actor_rollout_ref.actor.grad_clip=0.3"])
    assert run.config.actor_rollout_ref.actor.optim.clip_grad == 0.3  # the printed config shows the value used
    prepare(["actor_rollout_ref.actor.grad_clip=0.3", "actor_rollout_ref.actor.optim.clip_grad=0.3"])
    with pytest.raises(ConfigError, match="optim.clip_grad=0.5 and actor_rollout_ref.actor.grad_clip=0.3 disagree"):
        prepare(["actor_rollout_ref.actor.grad_clip=0.3", "actor_rollout_ref.actor.optim.clip_grad=0.5"])


def test_console_verbose_defaults_on_when_console_is_the_only_logger():
    assert prepare(["trainer.logger=['console']"]).config.trainer.console_verbose is True
    assert prepare(["trainer.logger=console"]).config.trainer.console_verbose is True
    assert prepare(["trainer.logger=['console','wandb']"]).config.trainer.console_verbose is False
    assert prepare(["trainer.logger=['console','file']", "trainer.console_verbose=True"]).config.trainer.console_verbose


def test_val_generations_are_the_same_prompts_every_time():
    from strive.trainer.validate import pick_generations

    rows = [{"input": f"q{i}", "output": f"a{i}", "score": float(i)} for i in range(10)]
    picked = pick_generations(rows, 3)
    assert len(picked) == 3 and picked == pick_generations(list(reversed(rows)), 3)
    assert pick_generations(rows, 0) == [] and len(pick_generations(rows, 50)) == 10


def test_explain_says_when_a_key_is_refused_or_without_effect():
    from strive.config import explain

    assert "strive: refused when set (strive trains with FSDP2 only" in explain("actor_rollout_ref.actor.strategy")
    assert "strive: no effect when set" in explain("actor_rollout_ref.rollout.over_sample_rate")
    assert "strive:" not in explain("actor_rollout_ref.actor.ppo_epochs")


def test_reward_model_ulysses_key_of_verl_yaml_is_accepted_at_one_and_refused_above():
    """verl's ppo_trainer.yaml writes reward_model.ulysses_sequence_parallel_size; a file that sets it loads."""
    from strive.config import prepare

    base = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "data.train_batch_size=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=4"]
    prepare([*base, "reward_model.ulysses_sequence_parallel_size=1"])
    with pytest.raises(ConfigError, match="reward_model.ulysses_sequence_parallel_size=2"):
        prepare([*base, "reward_model.ulysses_sequence_parallel_size=2"])
