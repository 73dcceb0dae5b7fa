"""LoRA's keys at start-up: accepted on the actor, noted when they cannot act, refused where strive has no LoRA; and
the error a LoRA run gives without peft."""

import builtins
import re

import pytest

from strive.config import ConfigError, prepare, uses_lora


def test_lora_rank_turns_lora_on_and_its_keys_pass_without_notes():
    run = prepare(["actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.model.lora_alpha=16",
                   "actor_rollout_ref.model.target_modules=[q_proj,v_proj]",
                   "actor_rollout_ref.model.exclude_modules=[o_proj]"])
    assert uses_lora(run.config)
    assert run.config.actor_rollout_ref.model.target_modules == ["q_proj", "v_proj"]
    assert not [n for n in run.notes if "lora" in n.lower() or "target_modules" in n]


def test_an_adapter_path_turns_lora_on_and_says_whose_config_wins():
    run = prepare(["actor_rollout_ref.model.lora_adapter_path=/a", "actor_rollout_ref.model.lora_rank=4"])
    assert uses_lora(run.config)
    assert any("lora_adapter_path is set" in n and "lora_rank" in n for n in run.notes), run.notes
    assert not uses_lora(prepare([]).config)


def test_lora_keys_without_lora_are_noted():
    notes = prepare(["actor_rollout_ref.model.lora_alpha=32", "actor_rollout_ref.model.target_modules=[q_proj]"]).notes
    for key in ("lora_alpha=32", "target_modules=['q_proj']"):
        assert any(n.startswith(f"actor_rollout_ref.model.{key} has no effect") for n in notes), (key, notes)


def test_the_reference_note_appears_only_with_a_kl_term():
    with_kl = prepare(["actor_rollout_ref.model.lora_rank=8", "actor_rollout_ref.actor.use_kl_loss=True"]).notes
    assert any("reference policy is the actor with its adapter disabled" in n for n in with_kl)
    without = prepare(["actor_rollout_ref.model.lora_rank=8"]).notes
    assert not any("adapter disabled" in n for n in without)


@pytest.mark.parametrize("override, message", [
    ("actor_rollout_ref.model.lora_rank=-1", "actor_rollout_ref.model.lora_rank=-1: must be 0"),
    ("critic.model.lora_rank=8", "critic.model.lora_rank=8: LoRA on the critic is not implemented"),
])
def test_bad_lora_settings_are_refused_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        prepare([override])


@pytest.mark.parametrize("override, key", [
    ("actor_rollout_ref.model.use_shm=True", "actor_rollout_ref.model.use_shm=True"),
    ("actor_rollout_ref.rollout.layered_summon=True", "actor_rollout_ref.rollout.layered_summon=True"),
])
def test_verl_memory_tricks_are_noted(override, key):
    notes = prepare([override, "actor_rollout_ref.model.lora_rank=8"]).notes
    assert any(n.startswith(key + " has no effect") and "verl's" in n for n in notes), notes


def test_missing_peft_says_how_to_install_it(monkeypatch):
    from strive.models import lora

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=re.escape("pip install 'strive[lora]'")):
        lora.import_peft()


def test_the_package_imports_without_peft():
    import subprocess
    import sys

    code = ("import sys; sys.modules['peft'] = None\n"
            "import strive.models.lora, strive.workers.actor, strive.trainer.merge, strive.controller.process\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr[-2000:]
