"""trust_remote_code is off unless set: a model folder whose config points at its own Python code (auto_map) does
not run that code through strive's loaders or its config defaults, and runs it only when the key is set."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from strive.config import prepare

CUSTOM = '''
import os
from transformers import LlamaConfig

open(MARKER, "w").close()


class MarkedConfig(LlamaConfig):
    model_type = "marked_llama"
'''


@pytest.fixture
def remote_code_model(tmp_path):
    from strive.models.tiny import make_tiny_model

    path = Path(make_tiny_model(str(tmp_path / "model"), arch="llama"))
    (path / "custom_config.py").write_text(CUSTOM.replace("MARKER", repr(str(tmp_path / "RAN"))))
    config = json.loads((path / "config.json").read_text())
    config.update(model_type="marked_llama", auto_map={"AutoConfig": "custom_config.MarkedConfig",
                                                       "AutoTokenizer": ["custom_config.MarkedConfig", None]})
    (path / "config.json").write_text(json.dumps(config))
    return path


def _load(path, trust, tmp_path, what):
    code = (f"from strive.models.loading import {what}\n"
            f"try:\n    {what}({str(path)!r}, trust_remote_code={trust})\nexcept Exception as e:\n    print('ERR', e)")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout


def test_remote_code_runs_only_when_asked(remote_code_model, tmp_path):
    marker = remote_code_model.parent / "RAN"
    out = _load(remote_code_model, False, tmp_path, "load_hf_config")
    assert not marker.exists() and "trust_remote_code" in out  # refused, code not run
    out = _load(remote_code_model, True, tmp_path, "load_hf_config")
    assert marker.exists(), out  # the same folder does run it when the key says so


def test_every_config_default_is_off():
    cfg = prepare(["actor_rollout_ref.model.path=x", "critic.model.path=x"]).config
    assert cfg.actor_rollout_ref.model.trust_remote_code is False and cfg.data.trust_remote_code is False
    assert cfg.critic.model.trust_remote_code is False and cfg.reward_model.model.trust_remote_code is False
    on = prepare(["actor_rollout_ref.model.trust_remote_code=True"]).config
    assert on.critic.model.trust_remote_code is True  # the critic follows the actor's key, as in verl


def test_every_hub_loader_call_passes_the_key():
    """A source scan: each AutoModel*/AutoTokenizer/AutoConfig .from_pretrained call in strive/ passes
    trust_remote_code, except the listed ones, which load formats that cannot carry code."""
    allowed = {("strive/models/fetch.py", "gguf_file"),
               ("strive/trainer/merge.py", "AutoConfig.from_pretrained(hf_dir)")}
    root = Path(__file__).resolve().parents[2]
    missing = []
    for path in (root / "strive").rglob("*.py"):
        rel = str(path.relative_to(root))
        text = path.read_text()
        for match in re.finditer(r"Auto\w+\.from_pretrained\(", text):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            call = text[match.start(): end]
            passes = "trust_remote_code" in call or (
                "**kwargs" in call and "trust_remote_code=trust_remote_code" in text)
            if not passes and not any(rel == f and key in call for f, key in allowed):
                missing.append(f"{rel}: {call}")
    assert not missing, missing
