"""The reward-model role (strive/workers/reward_model.py) under FSDP2 (one process, gloo): its score of a sample is
the plain transformers forward's `model(**inputs).logits` of the same text, whatever the padding and micro-batching;
and the config's start-up checks name the key."""

import pytest
import torch
import torch.distributed as dist

from strive.config import ConfigError, prepare


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    if dist.is_initialized():
        pytest.skip("a process group already exists in this test process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path_factory.mktemp('pg')}/pg", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _base(policy_dir):
    return [f"actor_rollout_ref.model.path={policy_dir}", "trainer.n_gpus_per_node=1", "trainer.device=cpu",
            "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4"]


def _worker(rm_dir, policy_dir, *extra):
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.reward_model import RewardModelWorker

    run = prepare([*_base(policy_dir), "reward_model.enable=True", f"reward_model.model.path={rm_dir}",
                   "reward_model.model.fsdp_config.dtype=float32", *extra])
    return RewardModelWorker(run.config.reward_model, run.sizes.reward_model, init_device_mesh("cpu", (1,)),
                             torch.device("cpu"))


@pytest.mark.parametrize("extra", [["reward_model.micro_batch_size_per_gpu=2"],
                                   ["reward_model.use_dynamic_bsz=True", "reward_model.forward_max_token_len_per_gpu=40"]])
def test_role_score_equals_plain_transformers_forward(process_group, tiny_rm_dir, tiny_model_dir, extra):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_rm_dir)
    texts = ["What is 2 + 3? The answer is 5.", "Hello there", "A much longer answer, with several clauses, that "
             "runs on for a while so the batch needs padding.", "ok"]
    chats = [[{"role": "user", "content": "q"}, {"role": "assistant", "content": t}] for t in texts]
    inputs = [tok(tok.apply_chat_template(c, tokenize=False), add_special_tokens=False)["input_ids"] for c in chats]
    scores = _worker(tiny_rm_dir, tiny_model_dir, *extra).score(inputs)  # (4,)

    plain = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = torch.cat([plain(input_ids=torch.tensor([ids])).logits[:, 0] for ids in inputs])  # (4,)
    assert scores.shape == (4,)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    assert scores.std() > 1e-3  # the scores differ: a wrong read position would not pass by luck


def test_missing_rm_path_names_the_key(tiny_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="reward_model.model.path=.*not a directory"):
        prepare([*_base(tiny_model_dir), "reward_model.enable=True", f"reward_model.model.path={tmp_path}/none"])


def test_causal_lm_is_refused_as_reward_model(tiny_model_dir):
    with pytest.raises(ConfigError, match="reward_model.model.path=.*sequence-classification"):
        prepare([*_base(tiny_model_dir), "reward_model.enable=True", f"reward_model.model.path={tiny_model_dir}"])


def test_two_label_classifier_is_refused(tiny_model_dir, tiny_rm_dir, tmp_path):
    import json
    import shutil

    two = tmp_path / "two"
    shutil.copytree(tiny_rm_dir, two)
    config = json.loads((two / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    config.pop("num_labels", None)
    (two / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="num_labels=2"):
        prepare([*_base(tiny_model_dir), "reward_model.enable=True", f"reward_model.model.path={two}"])


def test_settings_are_checked_and_summarised(tiny_model_dir, tiny_rm_dir):
    base = [*_base(tiny_model_dir), "reward_model.enable=True", f"reward_model.model.path={tiny_rm_dir}"]
    with pytest.raises(ConfigError, match="reward_model.combine=by_data_source needs reward_model.data_sources"):
        prepare([*base, "reward_model.combine=by_data_source"])
    with pytest.raises(ConfigError, match="reward_model.combine=average"):
        prepare([*base, "reward_model.combine=average"])
    with pytest.raises(ConfigError, match="keep one of them"):
        prepare([*base, "reward_model.judge.enable=True", f"reward_model.judge.path={tiny_model_dir}"])
    with pytest.raises(ConfigError, match="both reward_model.micro_batch_size_per_gpu=2 and the deprecated"):
        prepare([*base, "reward_model.micro_batch_size_per_gpu=2", "reward_model.micro_batch_size=2"])
    run = prepare([*base, "reward_model.combine=sum", "reward_model.micro_batch_size=4"])
    assert run.sizes.reward_model.micro_batch_per_rank == 4
    assert "  rewards: reward model" in run.report(with_yaml=False) and "reward = model score + rule score" in run.report(with_yaml=False)
    assert "reward model micro-batch per rank: 4 sequences" in run.report(with_yaml=False)
    assert run.config.data.return_raw_chat


def test_judge_settings_are_checked(tiny_model_dir):
    base = [*_base(tiny_model_dir), "reward_model.judge.enable=True"]
    with pytest.raises(ConfigError, match="reward_model.judge.path is not set"):
        prepare(base)
    ok = [*base, f"reward_model.judge.path={tiny_model_dir}"]
    with pytest.raises(ConfigError, match="reward_model.judge.prompt_template must contain"):
        prepare([*ok, "reward_model.judge.prompt_template=no fields"])
    with pytest.raises(ConfigError, match="reward_model.judge.engine=tgi"):
        prepare([*ok, "reward_model.judge.engine=tgi"])
    assert "LLM judge" in prepare(ok).report(with_yaml=False)


def test_rm_keys_without_enable_are_noted(tiny_model_dir):
    notes = prepare([*_base(tiny_model_dir), "reward_model.max_length=64"]).notes
    assert any(n.startswith("reward_model.max_length=64 has no effect in strive") for n in notes), notes


def test_micro_batches_by_count_and_by_token_budget():
    from strive.config.sizes import ForwardSizes
    from strive.workers.reward_model import micro_batches, right_pad

    rows = [[1] * 5, [2] * 3, [3] * 9, [4] * 2]
    assert [len(c) for c in micro_batches(rows, ForwardSizes(3, None))] == [3, 1]
    assert [[len(r) for r in c] for c in micro_batches(rows, ForwardSizes(None, 8))] == [[5, 3], [9], [2]]
    ids, mask = right_pad([[7, 8, 9], [5]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [5, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def _two_rank_worker(rank, rm_dir, policy_dir, pg_file, inputs, out_file):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from strive.workers.reward_model import RewardModelWorker

    dist.init_process_group("gloo", init_method=f"file://{pg_file}", rank=rank, world_size=2)
    run = prepare([f"actor_rollout_ref.model.path={policy_dir}", "trainer.n_gpus_per_node=2", "trainer.device=cpu",
                   "data.train_batch_size=4", "actor_rollout_ref.actor.ppo_mini_batch_size=4",
                   "reward_model.enable=True", f"reward_model.model.path={rm_dir}",
                   "reward_model.model.fsdp_config.dtype=float32", "reward_model.micro_batch_size_per_gpu=1"])
    worker = RewardModelWorker(run.config.reward_model, run.sizes.reward_model, init_device_mesh("cpu", (2,)),
                               torch.device("cpu"))
    scores = worker.score(inputs[rank])
    torch.save(scores, f"{out_file}.{rank}")
    dist.destroy_process_group()


def test_uneven_shares_over_two_ranks_do_not_hang(tiny_rm_dir, tiny_model_dir, tmp_path):
    """Rank 0 has three inputs (three forwards), rank 1 none: FSDP2's all-gathers need both ranks in every forward,
    so rank 1 runs three one-token forwards; the scores still equal the plain forward's."""
    import torch.multiprocessing as mp
    from transformers import AutoModelForSequenceClassification

    inputs = [[[5, 6, 7, 8], [9, 10], [11, 12, 13]], []]
    mp.start_processes(_two_rank_worker, args=(tiny_rm_dir, tiny_model_dir, str(tmp_path / "pg"), inputs,
                                               str(tmp_path / "scores")), nprocs=2, start_method="spawn", join=True)
    scores = torch.load(tmp_path / "scores.0")
    assert torch.load(tmp_path / "scores.1").shape == (0,)
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_rm_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        expected = torch.cat([plain(input_ids=torch.tensor([ids])).logits[:, 0] for ids in inputs[0]])
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
