"""strive: RL post-training (PPO, GRPO, ...) for LLMs with real inference engines, Ray and FSDP2.

The package imports nothing heavy: torch, ray and the engines load when a subpackage that needs them is used.
"""

__version__ = "0.1.0"
