"""default_compute_score: data_source dispatch and result normalisation (spec §3.2)."""

import subprocess
import sys

import numpy as np
import pytest

from strive.reward import SUPPORTED_DATA_SOURCES, default_compute_score, normalize_score


@pytest.mark.parametrize(
    "data_source",
    ["lighteval/MATH", "DigitalLearningGmbH/MATH-lighteval", "HuggingFaceH4/MATH-500", "math", "math_dapo",
     "math_dapo_reasoning", "aime2024", "aime25"],
)
def test_math_sources_use_boxed_scorer(data_source):
    assert default_compute_score(data_source, "so \\boxed{\\frac{1}{2}}", "0.5") == 1.0
    assert default_compute_score(data_source, "#### 0.5", "0.5") == 0.0


def test_gsm8k_source_uses_gsm8k_scorer():
    result = default_compute_score("openai/gsm8k", "#### 1,000", "1000", extra_info={"index": 3})
    assert result == 1.0 and isinstance(result, float)
    assert default_compute_score("openai/gsm8k", "\\boxed{1000}", "1000") == 0.0


@pytest.mark.parametrize(
    "response, expected",
    [("so #### 1,000", {"score": 1.0, "right": 1.0, "formatted": 1.0, "right_any_format": 1.0}),
     # the last `####` counts; a well-formed wrong answer earns nothing (the demo pays for right answers only)
     ("#### 7 then #### 999", {"score": 0.0, "right": 0.0, "formatted": 1.0, "right_any_format": 0.0}),
     ("the answer is 1000", {"score": 0.0, "right": 0.0, "formatted": 0.0, "right_any_format": 1.0})],
)
def test_arithmetic_source_scores_and_splits_right_from_format(response, expected):
    assert default_compute_score("strive/arithmetic", response, "1000") == expected


def test_unknown_source_names_it_and_lists_supported():
    with pytest.raises(NotImplementedError) as err:
        default_compute_score("my/dataset", "x", "y")
    message = str(err.value)
    assert "my/dataset" in message
    assert "openai/gsm8k" in message and "aime*" in message
    assert "aime*" in SUPPORTED_DATA_SOURCES


def test_normalize_score():
    assert normalize_score(True) == 1.0 and isinstance(normalize_score(True), float)
    assert normalize_score(2) == 2.0
    assert normalize_score(np.float32(0.5)) == 0.5
    assert normalize_score((0.25, "details")) == 0.25
    info = {"score": 1.0, "acc": True}
    assert normalize_score(info) is info
    with pytest.raises(ValueError, match="score"):
        normalize_score({"acc": 1.0}, "src")
    with pytest.raises(TypeError, match="src"):
        normalize_score(None, "src")


def test_package_import_is_light():
    code = "import sys, strive.reward; assert 'transformers' not in sys.modules and 'torch' not in sys.modules and 'math_verify' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_repo_root())


def _repo_root():
    import pathlib

    return str(pathlib.Path(__file__).resolve().parents[2])
