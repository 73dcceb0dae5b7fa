"""strive's glue around SGLang, against a stand-in for sglang's Engine (a class that records its calls).

These tests are evidence about our code only: the layout of TP groups, address formatting, the ServerArgs and
sampling-param mapping, output parsing, bucketing, the release/resume order, and the gather/scatter inside a TP
group (ranks simulated by threads with a stand-in torch.distributed). Whether SGLang has the names and parameters we
call is checked by tests/integration/test_sglang_api.py; whether it behaves is tests/gpu/test_sglang_engine.py.
The last two tests pin the memory-imbalance measures: the environment reaching Ray, and the engine built first.
"""

from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

from strive.engines.base import EngineSpec, SamplingParams
from strive.engines.sglang import SGLangEngine
from strive.engines.sglang_glue import (LAYOUT_KWARGS, SAMPLING_KEYS, SERVER_ARGS_FIELDS, TPRole, buckets,
                                        format_dist_init_addr, launch_env, leader_ranks, parse_output, plan_roles,
                                        row_seeds, sampling_dict, server_args, tp_groups)

EOS = 258


# ---- stand-ins ---------------------------------------------------------------------------------------------------


class FakeEngine:
    """Records calls; generates token k of a row as a function of the prompt, k and the row's sampling_seed."""

    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "SGLANG_BLOCK_NONZERO_RANK_CHILDREN")}
        self.calls: list = []
        self.fail_generate = False
        FakeEngine.instances.append(self)

    def generate(self, input_ids=None, sampling_params=None, return_logprob=False):
        self.calls.append(("generate", [list(r) for r in input_ids], list(sampling_params), return_logprob))
        if self.fail_generate:
            raise RuntimeError("scheduler died")
        return [self._one(ids, sp) for ids, sp in zip(input_ids, sampling_params)]

    @staticmethod
    def _one(ids, sp):
        greedy = sp["temperature"] == 0
        out, reason = [], {"type": "length", "length": sp["max_new_tokens"]}
        for k in range(sp["max_new_tokens"]):
            token = (sum(ids) + 7 * k + (0 if greedy else sp.get("sampling_seed", 0))) % 250 + 1
            out.append(token)
            if not sp["ignore_eos"] and token in sp["stop_token_ids"]:
                reason = {"type": "stop", "matched": token}
                break
        lps = [(-0.1 * (k + 1), t, None) for k, t in enumerate(out)]
        return {"output_ids": out, "meta_info": {"finish_reason": reason, "output_token_logprobs": lps}}

    def update_weights_from_tensor(self, named_tensors, load_format=None, flush_cache=True):
        self.calls.append(("update", list(named_tensors), load_format, flush_cache))
        return True, "Success"

    def begin_weight_update(self, selector="all"):
        self.calls.append(("begin",))
        return True, "Success"

    def end_weight_update(self):
        self.calls.append(("end",))
        return True, "Success"

    def release_memory_occupation(self, tags=None):
        self.calls.append(("release", tags))

    def resume_memory_occupation(self, tags=None):
        self.calls.append(("resume", tags))

    def flush_cache(self):
        self.calls.append(("flush",))
        return SimpleNamespace(success=True)

    def shutdown(self):
        self.calls.append(("shutdown",))

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


class TaglessFakeEngine(FakeEngine):
    """release/resume without tags (as SGLang 0.4.6.post5), weight-update sessions as 0.5.23."""

    def release_memory_occupation(self):
        self.calls.append(("release", None))

    def resume_memory_occupation(self):
        self.calls.append(("resume", None))


@dataclass
class FakeLocal:
    values: list


def fake_sglang(engine_cls=FakeEngine) -> dict:
    return {"Engine": engine_cls, "serialize": lambda t: ("handle", t), "LocalSerializedTensor": FakeLocal,
            "sampling_fields": set(SAMPLING_KEYS)}


class NoDist:
    @staticmethod
    def is_available():
        return True

    @staticmethod
    def is_initialized():
        return False


class _Group:
    def __init__(self, ranks):
        self.ranks = tuple(ranks)
        self.barrier = threading.Barrier(len(ranks), timeout=30)
        self.slots = [None] * len(ranks)

    def exchange(self, rank, obj):
        self.slots[self.ranks.index(rank)] = obj
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class ThreadWorld:
    """torch.distributed's object collectives for ranks that are threads of this process."""

    def __init__(self, size):
        self.size, self.lock, self.groups = size, threading.Lock(), {}

    def group(self, ranks):
        with self.lock:
            return self.groups.setdefault(tuple(ranks), _Group(ranks))

    def dist(self, rank):
        return ThreadDist(self, rank)


class ThreadDist:
    def __init__(self, world, rank):
        self.world, self.rank = world, rank

    is_available = staticmethod(lambda: True)
    is_initialized = staticmethod(lambda: True)

    def get_rank(self):
        return self.rank

    def get_world_size(self):
        return self.world.size

    def new_group(self, ranks, backend=None):
        assert backend == "gloo"
        return self.world.group(ranks)

    def _g(self, group):
        return group if group is not None else self.world.group(range(self.world.size))

    def all_gather_object(self, out, obj, group=None):
        out[:] = self._g(group).exchange(self.rank, obj)

    def gather_object(self, obj, out, dst, group=None):
        values = self._g(group).exchange(self.rank, obj)
        if self.rank == dst:
            out[:] = values

    def scatter_object_list(self, out, inputs, src, group=None):
        g = self._g(group)
        values = g.exchange(self.rank, inputs)
        out[0] = values[g.ranks.index(src)][g.ranks.index(self.rank)]

    def broadcast_object_list(self, objs, src, group=None):
        g = self._g(group)
        objs[:] = g.exchange(self.rank, list(objs))[g.ranks.index(src)]


def run_ranks(world_size, fn):
    """fn(rank) on one thread per rank; results in rank order; the first exception is re-raised."""
    results, errors = [None] * world_size, [None] * world_size

    def target(rank):
        try:
            results[rank] = fn(rank)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors[rank] = exc

    threads = [threading.Thread(target=target, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, errors


def spec(**kw) -> EngineSpec:
    base = dict(model_path="/models/x", device="cpu", eos_token_ids=[EOS], pad_token_id=0, seed=3,
                load_format="dummy", update_weights_bucket_megabytes=1)
    return EngineSpec(**{**base, **kw})


def make_engine(**kw) -> SGLangEngine:
    return SGLangEngine(spec(**kw), sglang=fake_sglang(), dist=NoDist())


@pytest.fixture(autouse=True)
def _clear_instances():
    FakeEngine.instances.clear()


# ---- layout and addresses ----------------------------------------------------------------------------------------


def test_tp_groups_and_leaders():
    assert tp_groups(8, 2) == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert leader_ranks(8, 2) == [0, 2, 4, 6]
    assert leader_ranks(16, 16) == [0]
    assert leader_ranks(4, 1) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="tensor_model_parallel_size=3 must divide"):
        tp_groups(8, 3)


def test_plan_roles_one_node_and_two_nodes():
    one = plan_roles(["a"] * 4, 2)
    assert [(r.group, r.nnodes, r.node_rank, r.launches_engine, r.is_leader) for r in one] == [
        ((0, 1), 1, 0, True, True), ((0, 1), 1, 0, False, False),
        ((2, 3), 1, 0, True, True), ((2, 3), 1, 0, False, False)]
    # the seed's TP=16 over two 8-GPU nodes: one engine front end (rank 0), schedulers launched by rank 8 too
    two = plan_roles(["n0"] * 8 + ["n1"] * 8, 16)
    assert [r.rank for r in two if r.launches_engine] == [0, 8]
    assert {r.nnodes for r in two} == {2}
    assert [r.node_rank for r in two] == [0] * 8 + [1] * 8
    assert [r.rank for r in two if r.is_leader] == [0]


@pytest.mark.parametrize("nodes, tp, message", [
    (["a", "a", "a", "b"], 4, "unequal GPUs per node"),
    (["a", "b", "a", "b"], 4, "comes back"),
    (["a"] * 6, 4, "must divide"),
])
def test_plan_roles_refuses_layouts_sglang_cannot_form(nodes, tp, message):
    with pytest.raises(ValueError, match=message):
        plan_roles(nodes, tp)


@pytest.mark.parametrize("host, port, expected", [
    ("10.94.16.4", 29500, "10.94.16.4:29500"),
    ("node-0.cluster.local", 1234, "node-0.cluster.local:1234"),
    ("::1", 29500, "[::1]:29500"),
    ("2001:db8::16:4", 80, "[2001:db8::16:4]:80"),
    ("[2001:db8::16:4]", 80, "[2001:db8::16:4]:80"),  # already bracketed: not twice
    ("fe80::1%eth0", 7, "[fe80::1%eth0]:7"),
    (" 10.0.0.1 ", 7, "10.0.0.1:7"),
])
def test_format_dist_init_addr(host, port, expected):
    assert format_dist_init_addr(host, port) == expected


@pytest.mark.parametrize("host, port", [("10.0.0.1", 0), ("10.0.0.1", 70000), ("", 5)])
def test_format_dist_init_addr_rejects_bad_parts(host, port):
    with pytest.raises(ValueError):
        format_dist_init_addr(host, port)


def test_launch_env_single_and_multi_node():
    peers = [{"node": "n0" if r < 2 else "n1", "ip": "2001:db8::1" if r < 2 else "2001:db8::2", "gpu": str(4 + r),
              "port": 40000 + r} for r in range(4)]
    roles = plan_roles([p["node"] for p in peers], 4)
    env, addr = launch_env(roles[0], peers)
    assert env == {"CUDA_VISIBLE_DEVICES": "4,5"} and addr == "[2001:db8::1]:40000"
    env, addr = launch_env(roles[2], peers)  # second node: its own GPUs, the leader's address
    assert env == {"CUDA_VISIBLE_DEVICES": "6,7", "SGLANG_BLOCK_NONZERO_RANK_CHILDREN": "0"}
    assert addr == "[2001:db8::1]:40000"
    single = plan_roles(["n0"] * 4, 2)
    env, addr = launch_env(single[2], [dict(p, node="n0") for p in peers])
    assert env == {"CUDA_VISIBLE_DEVICES": "6,7"} and addr is None


# ---- argument mapping --------------------------------------------------------------------------------------------


def test_server_args_from_spec_and_engine_kwargs():
    s = spec(gpu_memory_utilization=0.8, tensor_parallel_size=2, max_model_len=8192, max_num_seqs=512,
             enforce_eager=True, trust_remote_code=True, dtype="bfloat16", override_config={"rope_theta": 1e6},
             engine_kwargs={"attention_backend": "fa3", "mem_fraction_static": 0.7})
    role = TPRole(0, (0, 1), 0, 1, True)
    kwargs = server_args(s, role, base_gpu_id=0, dist_init_addr=None)
    assert kwargs == dict(model_path="/models/x", dtype="bfloat16", load_format="dummy", tp_size=2,
                          mem_fraction_static=0.7, enable_memory_saver=True, skip_tokenizer_init=True, base_gpu_id=0,
                          gpu_id_step=1, random_seed=3, trust_remote_code=True, max_running_requests=512,
                          disable_cuda_graph=True, log_level="error", context_length=8192,
                          json_model_override_args='{"rope_theta": 1000000.0}', attention_backend="fa3",
                          chunked_prefill_size=8192, disable_radix_cache=False)
    assert set(kwargs) - set(s.engine_kwargs) <= set(SERVER_ARGS_FIELDS)
    assert server_args(spec(), role, 0, None)["mem_fraction_static"] == 0.5  # gpu_memory_utilization's default
    multi = server_args(spec(tensor_parallel_size=16), TPRole(8, tuple(range(16)), 1, 2, True), 0, "10.0.0.1:5")
    assert (multi["nnodes"], multi["node_rank"], multi["dist_init_addr"], multi["tp_size"]) == (2, 1, "10.0.0.1:5", 16)


@pytest.mark.parametrize("key", LAYOUT_KWARGS)
def test_engine_kwargs_may_not_set_the_layout(key):
    with pytest.raises(ValueError, match="may not set"):
        server_args(spec(engine_kwargs={key: 1}), TPRole(0, (0,), 0, 1, True), 0, None)


def test_standalone_engine_starts_with_dummy_weights_and_memory_saver():
    make_engine(device="cuda:3", tensor_parallel_size=2)  # torch.device only parses "cuda:3"; nothing runs on it
    (eng,) = FakeEngine.instances
    assert eng.kwargs["load_format"] == "dummy" and eng.kwargs["enable_memory_saver"] is True
    assert eng.kwargs["base_gpu_id"] == 3 and eng.kwargs["tp_size"] == 2 and "nnodes" not in eng.kwargs


def test_sampling_dict_maps_verl_conventions():
    sampled = sampling_dict(SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=0,
                                           stop_token_ids=[5, EOS]), [EOS, 100], 9, seed=11)
    assert sampled == {"max_new_tokens": 9, "temperature": 0.7, "top_p": 0.9, "top_k": -1, "ignore_eos": False,
                       "stop_token_ids": [5, EOS, 100], "no_stop_trim": True, "skip_special_tokens": False,
                       "sampling_seed": 11}
    assert sampling_dict(SamplingParams(max_new_tokens=4, top_k=40), [EOS], 4, None)["top_k"] == 40
    assert "sampling_seed" not in sampling_dict(SamplingParams(max_new_tokens=4), [EOS], 4, None)
    greedy = sampling_dict(SamplingParams(max_new_tokens=4, do_sample=False, temperature=0.7, top_p=0.5, top_k=3),
                           [EOS], 4, None)
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0.0, 1.0, -1)
    assert sampling_dict(SamplingParams(max_new_tokens=4, temperature=0.0), [EOS], 4, None)["temperature"] == 0.0
    no_eos = sampling_dict(SamplingParams(max_new_tokens=4, ignore_eos=True, stop_token_ids=[5]), [EOS], 4, None)
    assert no_eos["ignore_eos"] is True and no_eos["stop_token_ids"] == []
    assert set(sampled) <= set(SAMPLING_KEYS)


def test_row_seeds_are_distinct_and_replayable():
    a = row_seeds(7, 6, random.Random(0))
    assert a == row_seeds(7, 6, random.Random(99)) and len(set(a)) == 6
    assert a != row_seeds(8, 6, random.Random(0))
    rng = random.Random(0)
    first, second = row_seeds(None, 4, rng), row_seeds(None, 4, rng)
    assert len(set(first)) == 4 and first != second
    assert all(0 <= s < 2**62 for s in a + first)


# ---- output parsing and generation --------------------------------------------------------------------------------


def test_parse_output_stop_length_and_errors():
    stop = parse_output({"output_ids": [4, EOS], "meta_info": {
        "finish_reason": {"type": "stop", "matched": EOS}, "output_token_logprobs": [(-0.5, 4, None), (-1.0, EOS, None)]}})
    assert (stop.token_ids, stop.logprobs, stop.finish_reason) == ([4, EOS], [-0.5, -1.0], "stop")
    length = parse_output({"output_ids": [1, 2], "meta_info": {
        "finish_reason": {"type": "length", "length": 2}, "output_token_logprobs": [(-0.1, 1, "a"), (-0.2, 2, "b")]}})
    assert (length.token_ids, length.finish_reason) == ([1, 2], "length")
    with pytest.raises(RuntimeError, match="abort"):
        parse_output({"output_ids": [], "meta_info": {"finish_reason": {"type": "abort", "message": "oom"}}})
    with pytest.raises(RuntimeError, match="log-probs for 1 tokens"):
        parse_output({"output_ids": [1, 2], "meta_info": {"finish_reason": {"type": "length"},
                                                           "output_token_logprobs": [(-0.1, 1, None)]}})


def test_generate_n_is_prompt_major_with_a_seed_per_row():
    engine = make_engine()
    prompts = [[1, 2], [30], [7, 7, 7]]
    out = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, n=3, seed=4))
    (_, rows, sps, return_logprob), = FakeEngine.instances[0].calls
    assert rows == [p for p in prompts for _ in range(3)] and return_logprob is True
    assert len({sp["sampling_seed"] for sp in sps}) == 9
    assert len(out) == 9 and all(len(c.token_ids) == len(c.logprobs) == 5 for c in out)
    assert out[0].token_ids != out[1].token_ids  # the n samples of one prompt differ (their seeds do)
    again = engine.generate(prompts, SamplingParams(max_new_tokens=5, temperature=1.0, n=3, seed=4))
    assert [c.token_ids for c in again] == [c.token_ids for c in out]
    greedy = engine.generate(prompts, SamplingParams(max_new_tokens=5, do_sample=False, n=2))
    assert [c.token_ids for c in greedy[0::2]] == [c.token_ids for c in greedy[1::2]]


def test_generate_stops_and_clamps_to_max_model_len():
    engine = make_engine(max_model_len=6)
    first = FakeEngine._one([1, 2], {"max_new_tokens": 4, "temperature": 0, "ignore_eos": True,
                                     "stop_token_ids": []})["output_ids"]
    out = engine.generate([[1, 2], [1, 2, 3, 4, 5, 6]], SamplingParams(max_new_tokens=8, do_sample=False,
                                                                       stop_token_ids=[first[1]]))
    (_, rows, sps, _), = FakeEngine.instances[0].calls
    assert rows == [[1, 2]] and sps[0]["max_new_tokens"] == 4  # the full prompt has no room: not sent
    assert out[0].token_ids == first[:2] and out[0].finish_reason == "stop"
    assert (out[1].token_ids, out[1].finish_reason) == ([], "length")
    assert make_engine().generate([], SamplingParams(max_new_tokens=3)) == []


# ---- weights and memory -----------------------------------------------------------------------------------------


def named(sizes_kib: list[int]) -> list[tuple[str, torch.Tensor]]:
    return [(f"layer.{i}.weight", torch.full((kib * 256,), float(i))) for i, kib in enumerate(sizes_kib)]


def test_buckets_respect_size_and_order():
    tensors = named([256, 256, 256, 256, 256, 3072, 256, 512, 512])
    groups = list(buckets(iter(tensors), 2**20))
    assert [[n for n, _ in g] for g in groups] == [[f"layer.{i}.weight" for i in idx]
                                                   for idx in ([0, 1, 2, 3], [4], [5], [6, 7], [8])]
    assert [n for g in groups for n, _ in g] == [n for n, _ in tensors]


def test_update_weights_pushes_every_tensor_once_in_buckets_then_flushes():
    engine = make_engine()
    tensors = named([256] * 10 + [3072] + [256] * 3)
    engine.update_weights(iter(tensors))
    eng = FakeEngine.instances[0]
    assert eng.names() == ["begin"] + ["update"] * 5 + ["end", "flush"]
    updates = [c for c in eng.calls if c[0] == "update"]
    pushed = [name for c in updates for name, _ in c[1]]
    assert pushed == [n for n, _ in tensors]  # order kept, each once
    for _, bucket, load_format, flush in updates:
        size = sum(t.numel() * t.element_size() for _, t in bucket)
        assert size <= 2**20 or len(bucket) == 1
        assert load_format is None and flush is False
    total = sum(t.numel() * t.element_size() for _, t in tensors)
    assert engine.last_sync["bytes"] == total and engine.last_sync["tensors"] == 14
    assert engine.last_sync["buckets"] == 5 and engine.last_sync["gb_per_s"] > 0


def test_release_resume_maps_tags_and_guards_generate():
    engine = make_engine()
    eng = FakeEngine.instances[0]
    params = SamplingParams(max_new_tokens=2, do_sample=False)
    engine.release()
    engine.release(("weights",))  # already released: SGLang is not asked twice
    assert eng.calls == [("release", ["weights", "kv_cache"])]
    with pytest.raises(RuntimeError, match="released"):
        engine.generate([[1]], params)
    with pytest.raises(RuntimeError, match="resume"):
        engine.update_weights(named([1]))
    engine.resume(("weights",))
    with pytest.raises(RuntimeError, match="released"):
        engine.generate([[1]], params)
    engine.update_weights(named([1]))
    engine.resume(("kv_cache",))
    engine.resume(("kv_cache",))  # not released: SGLang would fail on it, so it is not asked
    assert [c for c in eng.calls if c[0] in ("release", "resume")] == [
        ("release", ["weights", "kv_cache"]), ("resume", ["weights"]), ("resume", ["kv_cache"])]
    assert engine.generate([[1]], params)[0].token_ids
    engine.release(("kv_cache",))  # the cache alone: weights stay
    engine.resume(("kv_cache",))
    assert engine.generate([[1]], params)[0].token_ids
    with pytest.raises(ValueError, match="unknown memory tags"):
        engine.release(("cuda_graph",))


def test_rollout_worker_sync_order_weights_push_then_kv_cache():
    """strive's RolloutWorker.sync_from on a released SGLang engine: resume weights → push → resume KV cache."""
    from strive.workers.rollout import RolloutWorker

    engine = make_engine()
    engine.release(("weights", "kv_cache"))
    worker = SimpleNamespace(engine=engine, released=True)
    metrics = RolloutWorker.sync_from(worker, iter([named([256, 256]), named([512])]))
    calls = FakeEngine.instances[0].names()
    assert calls == ["release", "resume", "begin", "update", "end", "flush", "resume"]  # one session, one flush
    resumes = [c for c in FakeEngine.instances[0].calls if c[0] == "resume"]
    assert resumes == [("resume", ["weights"]), ("resume", ["kv_cache"])]
    assert metrics["weight_sync/tensors"] == 3.0 and worker.released is False


def test_sglang_without_tags_releases_and_resumes_everything():
    engine = SGLangEngine(spec(), sglang=fake_sglang(TaglessFakeEngine), dist=NoDist())
    engine.release(("weights", "kv_cache"))
    engine.resume(("weights",))  # the KV cache comes back with the weights
    engine.update_weights(named([4]))
    engine.resume(("kv_cache",))
    assert FakeEngine.instances[0].names() == ["release", "resume", "begin", "update", "end", "flush"]
    assert engine.generate([[1]], SamplingParams(max_new_tokens=1))[0].token_ids


def test_flush_failure_raises():
    engine = make_engine()
    FakeEngine.instances[0].flush_cache = lambda: SimpleNamespace(success=False, message="busy")
    with pytest.raises(RuntimeError, match="flush_cache failed: busy"):
        engine.flush_cache()


# ---- TP groups: ranks as threads ----------------------------------------------------------------------------------


class GroupEngine(SGLangEngine):
    """Each thread-rank describes itself as its own process would."""

    NODES: list[str] = []
    LAUNCH = threading.Lock()  # threads share os.environ, which the launch sets; processes do not

    def _launch(self, kwargs, env):
        with self.LAUNCH:
            super()._launch(kwargs, env)

    def _describe_self(self):
        rank = self._dist.get_rank()
        return {"node": self.NODES[rank], "ip": f"10.0.0.{rank}", "gpu": str(10 + rank), "port": 30000 + rank}


def start_group(world, tp, nodes, **kw):
    GroupEngine.NODES = nodes
    tw = ThreadWorld(world)
    engines, errors = run_ranks(world, lambda r: GroupEngine(spec(tensor_parallel_size=tp, **kw),
                                                             sglang=fake_sglang(), dist=tw.dist(r)))
    assert errors == [None] * world, errors
    return engines


def test_group_start_gives_the_leader_its_groups_gpus():
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    engines = start_group(2, 2, ["n0", "n0"])
    (eng,) = FakeEngine.instances  # one SGLang engine for the group, on rank 0
    assert engines[0]._engine is eng and engines[1]._engine is None
    assert eng.env == {"CUDA_VISIBLE_DEVICES": "10,11", "SGLANG_BLOCK_NONZERO_RANK_CHILDREN": None}
    assert (eng.kwargs["tp_size"], eng.kwargs["base_gpu_id"], eng.kwargs["gpu_id_step"]) == (2, 0, 1)
    assert "dist_init_addr" not in eng.kwargs
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before  # restored after the launch


def test_group_over_two_nodes_passes_nnodes_node_rank_and_address():
    engines = start_group(4, 4, ["n0", "n0", "n1", "n1"])
    by_rank = {e.role.rank: e._engine for e in engines if e._engine is not None}
    assert sorted(by_rank) == [0, 2]
    assert [(by_rank[r].kwargs["nnodes"], by_rank[r].kwargs["node_rank"], by_rank[r].kwargs["dist_init_addr"])
            for r in (0, 2)] == [(2, 0, "10.0.0.0:30000"), (2, 1, "10.0.0.0:30000")]


def test_group_generate_returns_each_rank_its_own_prompts():
    world, tp = 4, 2
    engines = start_group(world, tp, ["n0"] * 4)
    shards = [[[10, 1]], [[11], [12, 2]], [], [[13]]]
    params = SamplingParams(max_new_tokens=3, do_sample=False, n=2)
    results, errors = run_ranks(world, lambda r: engines[r].generate(shards[r], params))
    assert errors == [None] * world, errors
    assert len(FakeEngine.instances) == 2
    sent = [c[1] for r in (0, 2) for c in engines[r]._engine.calls if c[0] == "generate"]
    assert sent == [[[10, 1]] * 2 + [[11]] * 2 + [[12, 2]] * 2, [[13]] * 2]  # rank order inside each group
    alone = make_engine()
    for r in range(world):
        assert [c.token_ids for c in results[r]] == [c.token_ids for c in alone.generate(shards[r], params)]


def test_group_generate_failure_reaches_every_rank():
    engines = start_group(2, 2, ["n0", "n0"])
    FakeEngine.instances[0].fail_generate = True
    _, errors = run_ranks(2, lambda r: engines[r].generate([[r + 1]], SamplingParams(max_new_tokens=2)))
    assert "scheduler died" in str(errors[0]) and "scheduler died" in str(errors[1])


def test_group_update_weights_sends_each_ranks_own_copy():
    world, tp = 4, 2
    engines = start_group(world, tp, ["n0"] * 4)

    def push(rank):
        tensors = [(f"w{i}", torch.full((256 * 256,), float(rank))) for i in range(6)]  # 256 KiB each
        engines[rank].update_weights(iter(tensors))
        return engines[rank].last_sync

    syncs, errors = run_ranks(world, push)
    assert errors == [None] * world, errors
    for leader in (0, 2):
        eng = engines[leader]._engine
        assert eng.names() == ["begin", "update", "update", "end", "flush"]
        for call in eng.calls:
            if call[0] != "update":
                continue
            for name, local in call[1]:
                assert isinstance(local, FakeLocal) and len(local.values) == tp
                # SGLang TP rank i reads strive rank leader + i's tensor (its own GPU)
                assert [float(v[1][0]) for v in local.values] == [float(leader), float(leader + 1)]
    assert [s["tensors"] for s in syncs] == [6] * world and all(s["buckets"] == 2 for s in syncs)


def test_group_release_resume_only_on_leaders():
    engines = start_group(2, 2, ["n0", "n0"])
    for e in engines:
        e.release()
        e.resume(("weights",))
    assert FakeEngine.instances[0].names() == ["release", "resume"]
    assert all(e._weights_stale and e._released == {"kv_cache"} for e in engines)


# ---- the memory-imbalance check: environment and build order -------------------------------------------------------


def test_imbalance_check_env_reaches_the_ray_runtime_env(monkeypatch):
    import ray

    from strive.config import prepare
    from strive.controller import cluster

    for var in ("RAY_ADDRESS", "SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK", "SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK"):
        monkeypatch.delenv(var, raising=False)
    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.setattr(cluster, "_running_local_cluster", lambda: None)
    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=2", "actor_rollout_ref.rollout.name=sglang"]).config
    cluster.init_ray(cfg, processes=2)
    env = seen["runtime_env"]["env_vars"]
    assert env["SGL_DISABLE_TP_MEMORY_INBALANCE_CHECK"] == "True"  # read by SGLang 0.4.x
    assert env["SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK"] == "false"  # read by SGLang 0.5.x
    # a local cluster strive starts listens on loopback, and so does gloo (cluster.loopback_ray)
    assert env.pop("GLOO_SOCKET_IFNAME", "lo") == os.environ.get("GLOO_SOCKET_IFNAME", "lo")
    assert env == cluster.worker_env(cfg, int(env["STRIVE_THREADS"]))


def test_build_creates_the_rollout_engine_before_any_training_weights(monkeypatch):
    import strive.workers.actor as actor_mod
    import strive.workers.critic as critic_mod
    import strive.workers.ref as ref_mod
    import strive.workers.rollout as rollout_mod
    from strive.config import prepare
    from strive.controller.process import ProcessSpec, WorkerProcess

    order = []

    def recorder(name):
        def make(*args, **kwargs):
            order.append(name)
            return SimpleNamespace(name=name, peft=None)
        return make

    monkeypatch.setattr(rollout_mod, "RolloutWorker", recorder("rollout"))
    monkeypatch.setattr(actor_mod, "ActorWorker", recorder("actor"))
    monkeypatch.setattr(ref_mod, "RefWorker", recorder("ref"))
    monkeypatch.setattr(critic_mod, "CriticWorker", recorder("critic"))
    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=1"]).config
    sizes = SimpleNamespace(actor=None, old_log_prob=None, ref=None, critic=None, values=None)
    for roles in (("actor", "ref", "critic", "rollout"), ("critic", "rollout", "actor")):
        order.clear()
        proc = WorkerProcess(ProcessSpec(0, 1, roles, "cpu"))
        proc.mesh = None
        proc.build(cfg, sizes, total_steps=1, eos_ids=[EOS], pad_id=0)
        assert order[0] == "rollout" and sorted(order) == sorted(roles)


def test_rollout_worker_calls_the_engine_even_without_prompts():
    """Engines of several ranks gather their group's prompts; a rank with none must still take part."""
    from strive.config import prepare
    from strive.workers.rollout import RolloutWorker

    cfg = prepare(["trainer.device=cpu", "trainer.n_gpus_per_node=1"]).config.actor_rollout_ref
    seen = []
    engine = SimpleNamespace(generate=lambda prompts, params: seen.append(prompts) or [])
    worker = SimpleNamespace(cfg=cfg, engine=engine, pad_id=0, released=False)
    batch = RolloutWorker.generate(worker, [], SamplingParams(max_new_tokens=2), release_after=False)
    assert seen == [[]] and len(batch) == 0
