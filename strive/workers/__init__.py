"""One class per role, each living in a worker process (strive.controller.process hosts the colocated ones).

- `actor.ActorWorker`: the policy under FSDP2; old log-probs, the PPO update, full weights for the engine;
- `critic.CriticWorker`: the value model; values and the value update;
- `ref.RefWorker`: the frozen reference policy's log-probs;
- `rollout.RolloutWorker`: an inference engine (strive.engines) and the weight sync into it;
- `fsdp.py` applies FSDP2 to a plain model; `microbatch.py`, `optim.py`, `checkpoint.py` are their shared parts.

Submodules are imported explicitly; this package imports nothing, so it stays cheap.
"""
