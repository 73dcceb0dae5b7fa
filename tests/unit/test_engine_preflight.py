"""A run naming an engine that cannot start here stops before Ray or any worker, saying what to install."""

import importlib.util

import pytest

from strive.engines import base
from strive.trainer import main_ppo

COMMON = ["trainer.device=cpu", "trainer.n_gpus_per_node=1", "actor_rollout_ref.rollout.tensor_model_parallel_size=1"]


def _without(monkeypatch, missing: str):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else real(name, *a))


@pytest.mark.parametrize("engine,hint", [("sglang", 'pip install "strive[sglang]"'),
                                         ("vllm", 'pip install "strive[vllm]"')])
def test_missing_engine_library_names_the_install_command(monkeypatch, tmp_path, capsys, engine, hint):
    _without(monkeypatch, engine)
    monkeypatch.setattr(main_ppo, "time", None)  # build_runtime (Ray) must not be reached: it would need time.time
    code = main_ppo.main(COMMON + [f"actor_rollout_ref.rollout.name={engine}", f"trainer.default_local_dir={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 1
    assert f"rollout.name={engine} needs the '{engine}' package" in err and hint in err


def test_sglang_on_cpu_is_refused_before_start(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    with pytest.raises(base.EngineUnavailable, match="runs only with trainer.device=cuda"):
        base.check_engine("sglang", "cpu")
    base.check_engine("sglang", "cuda")
    base.check_engine("hf", "cpu")


def test_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine; choose one of hf, vllm, sglang"):
        base.check_engine("trt", "cuda")


def _installed(monkeypatch, tmp_path, library: str, release: str, files: dict):
    """Pretend `library` is installed as `version`, its package directory holding `files` (path → text)."""
    from importlib import metadata
    from types import SimpleNamespace

    root = tmp_path / library
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    real_find, real_version = importlib.util.find_spec, metadata.version

    def find_spec(name, *a):
        return SimpleNamespace(submodule_search_locations=[str(root)]) if name == library else real_find(name, *a)

    def version(dist):
        if dist == base.DISTRIBUTIONS[library][0]:
            return release
        if dist in base.DISTRIBUTIONS[library]:
            raise metadata.PackageNotFoundError(dist)
        return real_version(dist)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(metadata, "version", version)


def _complete(library: str) -> dict:
    files: dict = {}
    for path, text, _ in base.REQUIRED_API[library]:
        files[path] = files.get(path, "") + text + "\n"
    return files


@pytest.mark.parametrize("library,old", [("vllm", "0.11.0"), ("sglang", "0.4.6.post5")])
def test_old_engine_is_refused_at_preflight_with_the_install_command(monkeypatch, tmp_path, library, old):
    _installed(monkeypatch, tmp_path, library, old, _complete(library))
    with pytest.raises(base.EngineUnavailable) as err:
        base.check_engine(library, "cuda")
    message = str(err.value)
    assert f"needs {library} >= {base.MIN_VERSIONS[library]}" in message and old in message
    assert "Install it with: " + base.ENGINES[library].install in message


@pytest.mark.parametrize("library", ["vllm", "sglang"])
def test_engine_lacking_an_api_is_refused_even_at_a_new_version(monkeypatch, tmp_path, library):
    files = _complete(library)
    path, text, what = base.REQUIRED_API[library][0]
    files[path] = files[path].replace(text, "")
    _installed(monkeypatch, tmp_path, library, "99.0.0", files)
    with pytest.raises(base.EngineUnavailable, match="lacks " + what.split(" (")[0].replace("(", r"\(")):
        base.check_engine(library, "cuda")


@pytest.mark.parametrize("library", ["vllm", "sglang"])
def test_current_engine_passes_preflight(monkeypatch, tmp_path, library):
    _installed(monkeypatch, tmp_path, library, base.MIN_VERSIONS[library], _complete(library))
    base.check_engine(library, "cuda")
