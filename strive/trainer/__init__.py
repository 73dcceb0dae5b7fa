"""The PPO loop (ppo.py), its entry point (main_ppo.py), checkpoints, metrics and the merger."""
