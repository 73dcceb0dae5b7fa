"""Every SGLang name strive's sglang engine uses, checked against the installed `sglang` (skipped without it).

strive/engines/sglang.py lists what it calls (SGLANG_API: callable → keyword parameters passed), and
strive/engines/sglang_glue.py the ServerArgs fields it may set (SERVER_ARGS_FIELDS) and the sampling keys it sends
(SAMPLING_KEYS); this test reads those lists.
It also checks the shapes the module relies on: memory tag names, finish reasons, the (logprob, id, text) triples
of output_token_logprobs, the environment variable names, and that SGLang parses our dist_init_addr strings.
None of this starts an engine (that needs CUDA: tests/gpu/test_sglang_engine.py).

    /work/venv-sglang/bin/python -m pytest tests/integration/test_sglang_api.py -q
"""

from __future__ import annotations

import importlib
import inspect

import pytest

pytest.importorskip("sglang")

from strive.engines import sglang as ours  # noqa: E402
from strive.engines import sglang_glue as glue  # noqa: E402
from strive.engines.base import EngineSpec, SamplingParams  # noqa: E402


def resolve(path: str):
    """'pkg.module.Class.method' → the object: the longest importable module prefix, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(path)


def test_installed_version_is_reported():
    from importlib.metadata import version

    print("sglang", version("sglang"))
    assert version("sglang")


@pytest.mark.parametrize("path", sorted(ours.SGLANG_API))
def test_callables_take_the_keywords_we_pass(path):
    obj = resolve(path)
    params = inspect.signature(obj).parameters
    missing = [name for name in ours.SGLANG_API[path] if name not in params]
    assert not missing, f"{path}{inspect.signature(obj)} has no parameter(s) {missing}"


def server_args_fields() -> set[str]:
    from sglang.srt.server_args import ServerArgs

    try:
        import msgspec

        return {f.name for f in msgspec.structs.fields(ServerArgs)}  # 0.5.x: a msgspec Struct
    except (ImportError, TypeError):
        import dataclasses

        return {f.name for f in dataclasses.fields(ServerArgs)}  # 0.4.x: a dataclass


def test_server_args_has_every_field_we_set():
    missing = sorted(set(glue.SERVER_ARGS_FIELDS) - server_args_fields())
    assert not missing, f"ServerArgs has no field(s) {missing}"


def test_server_args_accepts_and_resolves_our_kwargs(tiny_qwen_dir):
    """ServerArgs(**our kwargs) runs SGLang's resolution (model config included). Resolution asks for an
    accelerator, so device="cpu" stands in for CUDA here; nothing is loaded or started."""
    from sglang.srt.server_args import ServerArgs

    spec = EngineSpec(model_path=tiny_qwen_dir, device="cuda", dtype="float32", load_format="dummy",
                      eos_token_ids=[258], max_model_len=512, gpu_memory_utilization=0.8,
                      override_config={"attention_dropout": 0.0})
    multi = glue.TPRole(0, (0, 1), 0, 2, True)
    for role, addr in ((glue.TPRole(0, (0,), 0, 1, True), None), (multi, glue.format_dist_init_addr("::1", 29500))):
        kwargs = glue.server_args(spec, role, 0, addr)
        args = ServerArgs(**kwargs)
        assert all(getattr(args, k) == v for k, v in kwargs.items())
        if role.nnodes == 1:
            ServerArgs(**{**kwargs, "device": "cpu"}).resolve_once()


def test_sampling_keys_and_mapping_pass_sglang_checks():
    from sglang.srt.sampling.sampling_params import SamplingParams as SGLSamplingParams

    fields = set(inspect.signature(SGLSamplingParams).parameters)
    assert not set(glue.SAMPLING_KEYS) - fields, f"SamplingParams lacks {set(glue.SAMPLING_KEYS) - fields}"
    cases = [(SamplingParams(max_new_tokens=8, do_sample=False), 1),  # greedy: SGLang samples top-1
             (SamplingParams(max_new_tokens=8, temperature=0.7, top_p=0.9, top_k=0), None),  # -1 → whole vocab
             (SamplingParams(max_new_tokens=8, top_k=5, ignore_eos=True, stop_token_ids=[3]), 5)]
    for params, top_k in cases:
        sp = SGLSamplingParams(**glue.sampling_dict(params, [258], 8, seed=9))
        sp.verify(259)  # raises on values SGLang refuses (top_k 0, top_p 0, ...)
        if top_k is not None:
            assert sp.top_k == top_k
        else:
            assert sp.top_k > 259
        assert sp.stop_token_ids == (None if params.ignore_eos else {258, *params.stop_token_ids})
        assert sp.sampling_seed == 9


def test_memory_tags_are_sglangs():
    from sglang.srt import constants

    assert ours.TAGS == {"weights": constants.GPU_MEMORY_TYPE_WEIGHTS, "kv_cache": constants.GPU_MEMORY_TYPE_KV_CACHE}


def test_finish_reasons_and_logprob_triples_parse():
    from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH, FINISH_MATCHED_TOKEN
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    triples = TokenizerManager.detokenize_logprob_tokens(None, [-0.25, -1.5], [7, 258], False)
    stop = glue.parse_output({"output_ids": [7, 258], "meta_info": {
        "finish_reason": FINISH_MATCHED_TOKEN(matched=258).to_json(), "output_token_logprobs": triples}})
    assert (stop.token_ids, stop.logprobs, stop.finish_reason) == ([7, 258], [-0.25, -1.5], "stop")
    length = glue.parse_output({"output_ids": [7, 258], "meta_info": {
        "finish_reason": FINISH_LENGTH(length=2).to_json(), "output_token_logprobs": triples}})
    assert length.finish_reason == "length"
    with pytest.raises(RuntimeError, match="abort"):
        glue.parse_output({"output_ids": [], "meta_info": {"finish_reason": FINISH_ABORT("oom").to_json()}})


def test_our_addresses_parse_as_sglang_reads_them():
    from sglang.srt.utils.network import NetworkAddress

    for host in ("10.94.16.4", "node-0", "::1", "2001:db8::16:4"):
        parsed = NetworkAddress.parse(glue.format_dist_init_addr(host, 29500))
        assert (parsed.host, parsed.port) == (host, 29500)


def test_environment_variable_names(monkeypatch):
    from sglang.srt.entrypoints.engine import Engine
    from sglang.srt.environ import envs

    monkeypatch.setenv("SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK", "false")
    assert envs.SGLANG_ENABLE_TP_MEMORY_INBALANCE_CHECK.get() is False
    assert "SGLANG_BLOCK_NONZERO_RANK_CHILDREN" in inspect.getsource(Engine._launch_subprocesses)


def test_import_and_local_serialized_tensor_round_trip():
    from sglang.srt.utils import MultiprocessingSerializer

    sgl = ours._import_sglang()
    assert set(sgl) == {"Engine", "serialize", "LocalSerializedTensor", "sampling_fields"}
    assert "tags" in inspect.signature(sgl["Engine"].release_memory_occupation).parameters
    # SGLang's unpickler must accept the wrapper, and get(i) must return rank i's payload. (Real payloads are
    # CUDA-IPC handles: SGLang's patched tensor reductions handle CUDA tensors only, so none is made here.)
    local = sgl["LocalSerializedTensor"](values=[MultiprocessingSerializer.serialize([float(i)]) for i in range(2)])
    again = MultiprocessingSerializer.deserialize(MultiprocessingSerializer.serialize([("w", local)]))
    assert again[0][0] == "w" and again[0][1].get(1) == [1.0]
