"""LoRA on the FSDP2 actor (one process, world size 1, gloo, tiny Llama): only the adapter trains; the reference
(adapter disabled) is the base model; the weights sent to the engine are PEFT's merge_and_unload weights; a
checkpoint merges both ways (`strive merge --lora adapter|merged`) into models that give the actor's log-probs."""

import os

import pytest
import torch
import torch.distributed as dist

from strive.batch import Batch
from strive.config import prepare
from token_batches import token_batch

pytest.importorskip("peft")


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg')}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _actor(model_dir, *extra):
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.actor import ActorWorker

    run = prepare([f"actor_rollout_ref.model.path={model_dir}", "trainer.n_gpus_per_node=1",
                   "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2", "actor_rollout_ref.actor.optim.lr=5e-2",
                   "actor_rollout_ref.actor.fsdp_config.dtype=float32", "algorithm.adv_estimator=grpo",
                   "actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.lora_alpha=8",
                   "actor_rollout_ref.actor.use_kl_loss=True", *extra])
    torch.manual_seed(0)
    return ActorWorker(run.config.actor_rollout_ref, run.sizes.actor, run.sizes.old_log_prob,
                       init_device_mesh("cpu", (1,)), torch.device("cpu"), total_steps=2)


def _full(module) -> dict[str, torch.Tensor]:
    return {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for n, p in module.named_parameters()}


def _logp(model, batch: Batch) -> torch.Tensor:
    """Response log-probs of a plain HF (or PEFT) model: (B, T), 0 off the response mask."""
    T = batch.response_length
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits[:, -T - 1:-1]
    logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.responses[..., None]).squeeze(-1)
    return logp * batch.response_mask


@pytest.fixture(scope="module")
def trained(tiny_model_dir, process_group):
    """An actor whose first forward is the reference's (adapter off), then one update; and its weights before."""
    actor = _actor(tiny_model_dir)
    batch = token_batch()
    before = _full(actor.module)
    ref_first = actor.compute_ref_log_probs(batch)["ref_log_probs"]
    old = actor.compute_log_probs(batch)["old_log_probs"]
    metrics, _ = actor.update(batch.with_fields(old_log_probs=old, ref_log_probs=ref_first), step=1)
    return actor, batch, before, ref_first, metrics


def test_only_the_adapter_trains(trained):
    actor, _, before, _, metrics = trained
    trainable = {n for n, p in actor.module.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    in_optim = {id(p) for g in actor.optimizer.param_groups for p in g["params"]}
    assert in_optim == {id(p) for n, p in actor.module.named_parameters() if n in trainable}
    assert metrics["actor/grad_norm"] > 0
    after = _full(actor.module)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    # every lora_B starts at zero and moves (the reference's forward ran first and must not have frozen it)
    assert changed == {n for n in trainable if ".lora_B." in n} | {n for n in trainable if ".lora_A." in n}


def test_reference_is_the_base_model(trained, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    actor, batch, _, ref_first, _ = trained
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    expected = _logp(base, batch)
    torch.testing.assert_close(ref_first, expected, atol=1e-5, rtol=1e-5)
    ref_after = actor.compute_ref_log_probs(batch)["ref_log_probs"]  # the update moved the adapter, not the base
    torch.testing.assert_close(ref_after, expected, atol=1e-5, rtol=1e-5)
    policy = actor.compute_log_probs(batch)["old_log_probs"]
    assert (policy - ref_after).abs().max() > 1e-3  # the adapter is back on after the reference's pass


def test_sync_sends_merge_and_unload_weights(trained, tiny_model_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    actor, _, _, _, _ = trained
    sent = dict(kv for bucket in actor.full_weight_buckets(1 << 16) for kv in bucket)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    wrapped = get_peft_model(base, actor.peft.peft_config["default"])
    adapter = {n[3:]: t for n, t in _full(actor.module).items() if ".lora_" in n}
    _, unexpected = wrapped.get_base_model().load_state_dict(adapter, strict=False)
    assert not unexpected
    merged = wrapped.merge_and_unload().state_dict()
    plain = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    assert set(sent) == set(plain)  # the original names, no adapter tensors
    for name, tensor in sent.items():
        torch.testing.assert_close(tensor, merged[name], atol=1e-6, rtol=1e-6, msg=name)
    assert any(not torch.equal(sent[n], plain[n].detach()) for n in sent if "q_proj" in n)


def test_checkpoint_merges_both_ways(trained, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from strive.controller.process import _write_hf_meta
    from strive.models.lora import ADAPTER_DIR, save_adapter_config
    from strive.trainer.merge import merge
    from strive.workers.checkpoint import save_shards

    actor, batch, _, _, _ = trained
    policy = actor.compute_log_probs(batch)["old_log_probs"]
    ckpt = tmp_path / "global_step_1" / "actor"
    save_shards(str(ckpt), actor.module, actor.optimizer, actor.scheduler, 0, 1, ["model", "optimizer", "extra"])
    _write_hf_meta(actor.module, str(ckpt / "huggingface"), tiny_model_dir)
    save_adapter_config(actor.peft, str(ckpt / ADAPTER_DIR))
    shard = torch.load(ckpt / "model_world_size_1_rank_0.pt", weights_only=True)
    assert shard and all(".lora_" in n for n in shard)  # the adapter only: the base comes from model.path

    merged_dir = merge(str(tmp_path / "global_step_1"), str(tmp_path / "merged"), lora="merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    torch.testing.assert_close(_logp(merged, batch), policy, atol=1e-4, rtol=1e-4)
    assert os.path.exists(os.path.join(merged_dir, "tokenizer_config.json"))

    from strive.trainer.merge import main as merge_cli

    adapter_dir = str(tmp_path / "adapter")  # the command line's flag: strive merge CKPT --target_dir D --lora adapter
    assert merge_cli([str(tmp_path / "global_step_1"), "--target_dir", adapter_dir, "--lora", "adapter"]) == 0
    assert os.path.exists(os.path.join(adapter_dir, "adapter_config.json"))
    assert not os.path.exists(os.path.join(adapter_dir, "model.safetensors"))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with_adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
    torch.testing.assert_close(_logp(with_adapter, batch), policy, atol=1e-4, rtol=1e-4)


def test_adapter_path_starts_from_a_saved_adapter(trained, tiny_model_dir, tmp_path):
    """lora_adapter_path: a new actor from the adapter `strive merge --lora adapter` wrote gives the same policy."""
    from strive.controller.process import _write_hf_meta
    from strive.models.lora import ADAPTER_DIR, save_adapter_config
    from strive.trainer.merge import merge
    from strive.workers.checkpoint import save_shards

    actor, batch, _, _, _ = trained
    ckpt = tmp_path / "global_step_1" / "actor"
    save_shards(str(ckpt), actor.module, None, None, 0, 1, ["model"])
    _write_hf_meta(actor.module, str(ckpt / "huggingface"), tiny_model_dir)
    save_adapter_config(actor.peft, str(ckpt / ADAPTER_DIR))
    adapter_dir = merge(str(ckpt), str(tmp_path / "adapter"), lora="adapter")
    again = _actor(tiny_model_dir, f"actor_rollout_ref.model.lora_adapter_path={adapter_dir}")
    torch.testing.assert_close(again.compute_log_probs(batch)["old_log_probs"],
                               actor.compute_log_probs(batch)["old_log_probs"], atol=1e-5, rtol=1e-5)
    assert any(p.requires_grad for p in again.module.parameters())


def test_a_tied_output_head_is_refused(tiny_model_dir):
    from strive.models.loading import load_causal_lm
    from strive.models.lora import apply_lora

    run = prepare(["actor_rollout_ref.model.lora_rank=4", "actor_rollout_ref.model.target_modules=[lm_head,q_proj]"])
    tied = load_causal_lm(tiny_model_dir)
    tied.get_output_embeddings().weight = tied.get_input_embeddings().weight  # as tie_word_embeddings=True does
    with pytest.raises(ValueError, match="lm_head shares its weight"):
        apply_lora(tied, run.config.actor_rollout_ref.model, tiny_model_dir)
    untied = load_causal_lm(tiny_model_dir)
    apply_lora(untied, run.config.actor_rollout_ref.model, tiny_model_dir)  # the same targets on untied weights
