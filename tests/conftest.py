"""Shared fixtures: tiny offline models (built once per session), no network."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from strive.models.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-llama")), arch="llama")


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    from strive.models.tiny import make_tiny_model

    return make_tiny_model(str(tmp_path_factory.mktemp("tiny-qwen2")), arch="qwen2")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def smollm2_dir():
    from strive.models.fetch import ensure_model

    try:
        return ensure_model("smollm2-135m-instruct")
    except Exception as exc:  # noqa: BLE001 - not cached and no network
        pytest.skip(f"SmolLM2-135M-Instruct is not available offline: {exc}")


@pytest.fixture(scope="session")
def tiny_rm_dir(tmp_path_factory, smollm2_dir):
    """A tiny random reward model (LlamaForSequenceClassification, num_labels=1) with SmolLM2's tokenizer."""
    from strive.models.tiny import make_tiny_reward_model

    return make_tiny_reward_model(str(tmp_path_factory.mktemp("tiny-rm")), smollm2_dir)


_EXIT_STATUS: list[int] = []


def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    """After pytest's own teardown: name the threads still alive, run the atexit handlers (they stop engines' and
    Ray's child processes), then end the process without the interpreter's finalization. CI once crashed there
    (exit 139 after every test had passed, no trace): this process has run in-process Ray, gloo groups and
    tokenizer thread pools, whose native objects are torn down in no fixed order then. Every run of strive itself
    that a test starts is a subprocess whose exit code the test checks, so this hides no crash of strive's; only a
    whole `pytest` command ends this way (not pytest.main() inside another program)."""
    import atexit
    import sys
    import threading

    alive = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if alive:
        names = ", ".join(f"{t.name} (daemon={t.daemon})" for t in alive)
        print(f"\nthreads still alive at the end of the session: {names}", file=sys.stderr, flush=True)
    if _EXIT_STATUS and _whole_pytest_command(sys.argv[0]):
        sys.stdout.flush()
        sys.stderr.flush()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS[-1])


def _whole_pytest_command(argv0: str) -> bool:
    """`pytest ...` or `python -m pytest ...` (argv[0] is then pytest/__main__.py), not pytest.main() elsewhere."""
    script = os.path.dirname(argv0) if argv0.endswith("__main__.py") else argv0
    return os.path.basename(script) in ("pytest", "py.test")
