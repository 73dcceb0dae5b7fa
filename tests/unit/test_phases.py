"""The phase table and the typed calls across processes: what each phase ships and returns, checked without Ray."""

import dataclasses

import pytest
import torch

from strive.batch import Batch
from strive.controller.group import WorkerGroup
from strive.controller.process import WorkerProcess
from strive.trainer import phases

PHASES = [phases.OLD_LOG_PROBS, phases.REF_LOG_PROBS, phases.VALUES, phases.UPDATE_CRITIC, phases.UPDATE_ACTOR,
          phases.UPDATE_ACTOR_ON_POLICY]


def tiny_batch(B=4, P=2, T=3) -> Batch:
    attn = torch.ones(B, P + T, dtype=torch.long)
    return Batch(torch.zeros(B, P, dtype=torch.long), torch.ones(B, T, dtype=torch.long), attn,
                 attn.cumsum(-1) - 1, torch.ones(B, T), advantages=torch.randn(B, T), values=torch.randn(B, T))


class RecordingGroup:
    """Stands in for a WorkerGroup: records what each rank would receive and answers like the workers."""

    world_size = 2

    def __init__(self, answer):
        self.answer, self.sent = answer, []

    def call(self, method, shards, *args):
        self.sent.append((method, shards, args))
        return [self.answer(shard) for shard in shards]


def test_every_phase_names_a_worker_method_and_batch_fields():
    fields = {f.name for f in dataclasses.fields(Batch)}
    for phase in PHASES:
        assert getattr(WorkerProcess, phase.method.__name__) is phase.method, phase
        assert set(phase.sends) <= fields and set(phase.returns) <= fields, phase


def test_compute_ships_declared_fields_only_and_merges_in_rank_order():
    group = RecordingGroup(lambda shard: {"values": shard.prompts.float().sum(-1, keepdim=True).expand(-1, 3)})
    batch = tiny_batch()
    batch.prompts[:, 0] = torch.arange(4)
    out = phases.compute(group, phases.VALUES, batch, timings := {})
    method, shards, _ = group.sent[0]
    assert method is WorkerProcess.compute_values and [len(s) for s in shards] == [2, 2]
    assert all(s.advantages is None and s.values is None for s in shards)  # VALUES sends nothing extra
    assert out.values[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and "values" in timings


def test_update_ships_what_the_phase_declares():
    group = RecordingGroup(lambda shard: ({"critic/vf_loss": float(len(shard))}, {}))
    batch = tiny_batch()
    out = phases.update(group, phases.UPDATE_CRITIC, batch, 7, {}, metrics := {})
    _, shards, args = group.sent[0]
    assert args == (7,) and all(s.values is not None and s.returns is None and s.advantages is None for s in shards)
    assert metrics == {"critic/vf_loss": 2.0} and out is batch


def test_the_on_policy_update_brings_back_the_old_log_probs():
    def answer(shard):
        logp = shard.prompts[:, :1].float().expand(-1, 3)  # (b, T): each row's own marker
        return {"actor/pg_loss": 0.5}, {"old_log_probs": logp, "entropy": torch.ones(len(shard), 3)}

    group = RecordingGroup(answer)
    batch = tiny_batch()
    batch.prompts[:, 0] = torch.arange(4)
    batch.old_log_probs = torch.full((4, 3), 9.0)  # stale: must not travel
    out = phases.update(group, phases.UPDATE_ACTOR_ON_POLICY, batch, 3, {}, metrics := {})
    assert all(s.old_log_probs is None and s.advantages is not None for s in group.sent[0][1])
    assert out.old_log_probs[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and metrics == {"actor/pg_loss": 0.5}


def test_a_worker_returning_undeclared_fields_is_an_error():
    group = RecordingGroup(lambda shard: {"old_log_probs": torch.zeros(len(shard), 3)})  # no entropy
    with pytest.raises(RuntimeError, match="compute_log_probs returned .*declares"):
        phases.compute(group, phases.OLD_LOG_PROBS, tiny_batch(), {})


def test_group_calls_take_the_method_not_a_string():
    group = WorkerGroup.__new__(WorkerGroup)  # no Ray: only the name check runs
    group.name, group.process_cls = "actor_rollout_ref", WorkerProcess
    assert group.remote_name(WorkerProcess.sync_weights) == "sync_weights"
    with pytest.raises(TypeError, match="not a method of WorkerProcess"):
        group.remote_name("sync_weights")
    with pytest.raises(TypeError, match="not a method of WorkerProcess"):
        group.remote_name(Batch.chunk)


def _scored_batch(seed=0, B=4, T=5):
    g = torch.Generator().manual_seed(seed)
    batch = tiny_batch(B=B, T=T)
    rollout = -torch.rand(B, T, generator=g) * 2
    old = rollout + 0.3 * torch.randn(B, T, generator=g)
    scores = torch.zeros(B, T)
    scores[:, -1] = torch.tensor([1.0, 0.0, 1.0, 0.5])
    return batch.with_fields(rollout_log_probs=rollout, old_log_probs=old, token_level_scores=scores,
                             group_ids=torch.tensor([0, 0, 1, 1]), advantages=None)


def test_rollout_correction_off_by_default_changes_nothing():
    from strive.config import StriveConfig

    algo = StriveConfig().algorithm
    algo.adv_estimator = "grpo"
    batch = _scored_batch()
    out = phases.rewards_and_advantages(batch, algo, None, {}, metrics := {})
    assert out.response_mask is batch.response_mask and out.rollout_is_weights is None
    assert not any(k.startswith("rollout_corr/") for k in metrics)


def test_rollout_correction_weights_and_rejects_before_the_advantages():
    from strive.config import StriveConfig

    algo = StriveConfig().algorithm
    algo.adv_estimator = "grpo"
    rc = algo.rollout_correction
    rc.rollout_is, rc.rollout_rs, rc.rollout_rs_threshold = "token", "token_k1", "1.2"
    batch = _scored_batch()
    out = phases.rewards_and_advantages(batch, algo, None, {}, metrics := {})
    ratio = (batch.old_log_probs - batch.rollout_log_probs).exp()
    kept = ((1 / ratio >= 1 / 1.2 - 1e-6) & (1 / ratio <= 1.2 + 1e-6)).float()
    assert 0 < kept.sum() < kept.numel()  # the fixture rejects some tokens, not all
    assert torch.equal(out.response_mask, kept)
    torch.testing.assert_close(out.rollout_is_weights, ratio.clamp(max=2.0))
    assert (out.advantages[kept == 0] == 0).all()  # rejected tokens are outside the advantages' mask too
    assert metrics["rollout_corr/rollout_rs_masked_fraction"] == pytest.approx(1 - kept.mean().item(), abs=1e-6)
    for key in ("rollout_corr/rollout_is_mean", "rollout_corr/kl", "rollout_corr/ppl_ratio", "rollout_corr/chi2_token"):
        assert isinstance(metrics[key], float), key
    group = RecordingGroup(lambda shard: ({"actor/pg_loss": 0.0}, {}))
    phases.update(group, phases.UPDATE_ACTOR, out, 1, {}, {})
    assert all(s.rollout_is_weights is not None for s in group.sent[0][1])  # the weights reach the actor


class CharTokenizer:
    """ids are character codes; special tokens are ids ≥ 1000 (shown only when not skipped)."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join("<s>" if i >= 1000 and not skip_special_tokens else chr(i) for i in ids
                       if i < 1000 or not skip_special_tokens)


def test_dump_marks_trained_and_context_segments_of_a_multi_turn_response(tmp_path):
    import json

    from strive.batch import Meta
    from strive.workers.rollout import padded_batch

    ids = [ord(c) for c in "call"] + [1000] + [ord(c) for c in "tool says 4"] + [ord(c) for c in "#### 4"]
    mask = [1] * 4 + [0] * 12 + [1] * 6  # the engine's turn, the tool turn (context), the engine's answer
    single = [ord(c) for c in "#### 5"]
    batch = padded_batch([([65], ids, mask, [0.0] * len(ids)), ([66], single, [1] * len(single), [0.0] * 6)],
                         P=2, T=30, pad_id=0)
    batch = dataclasses.replace(batch, token_level_scores=torch.zeros(2, 30),
                                meta=Meta(["d", "d"], ["4", "5"], [{}, {}]))
    phases.dump_generations(str(tmp_path), 3, CharTokenizer(), batch, max_response_length=22)
    rows = [json.loads(line) for line in (tmp_path / "3.jsonl").read_text().splitlines()]
    assert [(r["response_length"], r["finish_reason"]) for r in rows] == [(22, "length"), (6, "stop")]
    assert rows[0]["output"] == "calltool says 4#### 4"
    assert rows[0]["segments"] == [{"trained": True, "tokens": 4, "text": "call"},
                                   {"trained": False, "tokens": 12, "text": "<s>tool says 4"},
                                   {"trained": True, "tokens": 6, "text": "#### 4"}]
    assert "segments" not in rows[1]  # single-turn: every valid token is trained
