"""bf16 compute on a CPU without bf16 units becomes float32 unless the user set it (strive/config/cpu_dtype.py)."""

from unittest import mock

from strive.config import prepare
from strive.config.cpu_dtype import cpu_has_bf16

AVX2 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma avx512f\n"
SAPPHIRE = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile amx_bf16\n"
GRAVITON = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"
BASE = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "data.train_batch_size=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.rollout.name=hf"]


def test_reads_the_bf16_flags():
    assert not cpu_has_bf16(AVX2)
    assert cpu_has_bf16(SAPPHIRE) and cpu_has_bf16(GRAVITON)
    assert not cpu_has_bf16("Features\t: fp asimd\n")
    assert cpu_has_bf16("")  # nothing to read: leave the dtypes alone


def _prepare(cpuinfo, extra=()):
    with mock.patch("strive.config.cpu_dtype.cpu_has_bf16", lambda info=None: cpu_has_bf16(cpuinfo)):
        return prepare(BASE + list(extra))


def test_defaults_become_float32_without_bf16_units_and_say_so():
    run = _prepare(AVX2, ["actor_rollout_ref.actor.use_kl_loss=True", "algorithm.adv_estimator=gae"])
    arr = run.config.actor_rollout_ref
    assert arr.actor.fsdp_config.dtype == arr.ref.fsdp_config.dtype == arr.rollout.dtype == "float32"
    assert run.config.critic.model.fsdp_config.dtype == "float32"
    assert arr.actor.fsdp_config.model_dtype == "fp32"  # master weights untouched
    note = [n for n in run.notes if "no bf16 units" in n]
    assert note and "actor_rollout_ref.actor.fsdp_config.dtype" in note[0]
    assert "actor_rollout_ref.ref.fsdp_config.dtype" in note[0] and "critic.model.fsdp_config.dtype" in note[0]


def test_the_note_names_only_the_roles_the_run_has():
    """GRPO without a KL term: no critic, no reference, no reward model; their keys are neither changed nor named."""
    run = _prepare(AVX2, ["algorithm.adv_estimator=grpo"])
    note = [n for n in run.notes if "no bf16 units" in n][0]
    assert "actor_rollout_ref.actor.fsdp_config.dtype" in note and "actor_rollout_ref.rollout.dtype" in note
    for unused in ("ref.fsdp_config", "critic.", "reward_model."):
        assert unused not in note
    assert run.config.critic.model.fsdp_config.dtype == "bfloat16"


def test_a_dtype_the_user_set_is_kept():
    run = _prepare(AVX2, ["actor_rollout_ref.actor.fsdp_config.dtype=bfloat16"])
    arr = run.config.actor_rollout_ref
    assert arr.actor.fsdp_config.dtype == "bfloat16" and arr.rollout.dtype == "float32"
    assert "actor_rollout_ref.actor.fsdp_config.dtype" not in [n for n in run.notes if "no bf16 units" in n][0]


def test_nothing_changes_with_bf16_units_or_on_cuda():
    run = _prepare(SAPPHIRE)
    assert run.config.actor_rollout_ref.actor.fsdp_config.dtype == "bfloat16"
    assert not [n for n in run.notes if "no bf16 units" in n]
    cuda = _prepare(AVX2, ["trainer.device=cuda"])
    assert cuda.config.actor_rollout_ref.rollout.dtype == "bfloat16"


def test_vllm_keeps_its_own_dtype():
    run = _prepare(AVX2, ["actor_rollout_ref.rollout.name=vllm"])
    assert run.config.actor_rollout_ref.rollout.dtype == "bfloat16"
    assert run.config.actor_rollout_ref.actor.fsdp_config.dtype == "float32"
