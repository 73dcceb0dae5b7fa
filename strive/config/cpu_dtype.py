"""Compute dtype on CPUs without bf16 arithmetic.

verl's compute dtype (`fsdp_config.dtype`, `rollout.dtype`) defaults to bfloat16. A CPU without bf16 instructions
(x86 without AVX512_BF16 or AMX; this project's AVX2 machines) emulates it: on the 2-core AVX2 machine a bf16
(n, V)·(V, H) product of SmolLM2's LM head ran over 100× slower than fp32, a decoder MLP product ~6× slower, and a
step of `strive demo` took 399 s before this change and 58 s after (bench/README.md, "CPU: the demo step side by
side").
So with trainer.device=cpu on such a CPU, the compute dtypes the user did not set become float32, and a note at
start-up says so. Master weights (`model_dtype`) are untouched. A dtype set on the command line is kept as given.
"""

from __future__ import annotations

from typing import Optional

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 /proc/cpuinfo "flags"
_ARM_BF16 = "bf16"  # aarch64 /proc/cpuinfo "Features"


def cpu_has_bf16(cpuinfo: Optional[str] = None) -> bool:
    """Whether the CPU does bf16 arithmetic natively, from /proc/cpuinfo. Unknown (no /proc, another OS): True, so
    nothing changes where it cannot be checked."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as fh:
                cpuinfo = fh.read()
        except OSError:
            return True
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        name, words = name.strip().lower(), value.split()
        if name == "flags":
            return any(flag in words for flag in _BF16_FLAGS)
        if name == "features":
            return _ARM_BF16 in words
    return True


def dtype_for_this_cpu() -> str:
    """The compute dtype bf16 defaults become on this CPU: "bfloat16" where it has bf16 units, else "float32"."""
    return "bfloat16" if cpu_has_bf16() else "float32"


def _compute_dtype_keys(cfg) -> list[tuple[str, object, str]]:
    """(key, owner, attribute) of every compute dtype the run's roles read: the reference only when a KL term
    uses it, the critic and the reward model only when enabled, the rollout's only on the `hf` engine."""
    from strive.config.resolve import needs_critic, needs_reference

    arr = cfg.actor_rollout_ref
    keys = [("actor_rollout_ref.actor.fsdp_config.dtype", arr.actor.fsdp_config, "dtype")]
    if needs_reference(cfg):
        keys.append(("actor_rollout_ref.ref.fsdp_config.dtype", arr.ref.fsdp_config, "dtype"))
    if needs_critic(cfg):
        keys.append(("critic.model.fsdp_config.dtype", cfg.critic.model.fsdp_config, "dtype"))
    if cfg.reward_model.enable:
        keys.append(("reward_model.model.fsdp_config.dtype", cfg.reward_model.model.fsdp_config, "dtype"))
    if arr.rollout.name == "hf":  # vLLM's CPU backend picks its own kernels per dtype: left as set
        keys.append(("actor_rollout_ref.rollout.dtype", arr.rollout, "dtype"))
    return keys


def cpu_compute_dtype(cfg, explicit: set[str], notes: list[str], cpuinfo: Optional[str] = None) -> None:
    """With trainer.device=cpu on a CPU without bf16 units, bf16 compute dtypes not set by the user → float32."""
    if cfg.trainer.device != "cpu" or cpu_has_bf16(cpuinfo):
        return
    changed = []
    for key, owner, attr in _compute_dtype_keys(cfg):
        if key not in explicit and getattr(owner, attr) in ("bfloat16", "bf16"):
            setattr(owner, attr, "float32")
            changed.append(key)
    if changed:
        notes.append(f"this CPU has no bf16 units (no avx512_bf16/amx_bf16), where bf16 runs several times slower "
                     f"than fp32: computing in float32 ({', '.join(changed)}); set them to bfloat16 to keep bf16")
