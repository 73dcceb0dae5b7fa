"""Start-up checks of the reward columns (strive/data/checks.py) and of prompt text (rl_dataset): numeric ground
truths become strings with a notice, unusable ones and non-UTF-8 prompts stop naming file, row and column."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from strive.data.checks import check_reward_columns, ground_truth_text
from strive.data.rl_dataset import RLDataset
from strive.reward import default_compute_score
from tests.unit.test_data_rl_dataset import build_tokenizer


def _row(truth, content="q", source="openai/gsm8k"):
    return {"data_source": source, "prompt": [{"role": "user", "content": content}],
            "reward_model": {"style": "rule", "ground_truth": truth}}


def _jsonl(tmp_path, rows, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_ground_truth_text():
    assert ground_truth_text(18) == "18" and ground_truth_text(18.0) == "18" and ground_truth_text(2.5) == "2.5"
    assert ground_truth_text(-3) == "-3"
    for other in (True, None, [1], {"a": 1}, b"1"):
        assert ground_truth_text(other) is None


def test_integer_ground_truth_is_converted_and_then_scores(tokenizer, tmp_path, capsys):
    path = _jsonl(tmp_path, [_row(18), _row("7"), _row(4.0)])
    ds = RLDataset(path, tokenizer, max_prompt_length=64)
    assert default_compute_score("openai/gsm8k", "#### 18", ds[0].ground_truth) == 0.0  # before: int never matched
    check_reward_columns(ds)
    assert [ds[i].ground_truth for i in range(3)] == ["18", "7", "4"]
    assert default_compute_score("openai/gsm8k", "#### 18", ds[0].ground_truth) == 1.0
    out = capsys.readouterr().out
    assert "'reward_model.ground_truth'" in out and f"{path} holds numbers in 2 rows" in out


@pytest.mark.parametrize("bad, shown", [([1, 2], "list"), ({"a": 1}, "dict"), (None, "missing"), (True, "bool")])
def test_unusable_ground_truth_names_file_row_and_column(tokenizer, tmp_path, bad, shown):
    path = _jsonl(tmp_path, [_row("1"), _row("2"), _row(bad)])
    ds = RLDataset(path, tokenizer, max_prompt_length=64)
    with pytest.raises(ValueError) as err:
        check_reward_columns(ds)
    message = str(err.value)
    assert path in message and "row 2," in message and "'reward_model.ground_truth'" in message and shown in message


def test_unknown_data_source_names_row_and_column(tokenizer, tmp_path):
    path = _jsonl(tmp_path, [_row("1"), _row("2", source="my/own")])
    ds = RLDataset(path, tokenizer, max_prompt_length=64)
    with pytest.raises(ValueError, match=r"row 1, column 'data_source'.*my/own"):
        check_reward_columns(ds)


def test_row_numbers_are_per_file_after_subsetting(tokenizer, tmp_path):
    a = _jsonl(tmp_path, [_row("1"), _row("2")], "a.jsonl")
    b = _jsonl(tmp_path, [_row("1"), _row("2"), _row([3])], "b.jsonl")
    ds = RLDataset([a, b], tokenizer, max_prompt_length=64, max_samples=5, shuffle_subset_seed=3)
    with pytest.raises(ValueError, match=f"{b}: row 2,"):
        check_reward_columns(ds)


def test_jsonl_that_is_not_utf8_names_file_line_and_row(tokenizer, tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps(_row("1")).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + good.replace(b'"q"', b'"caf\xe9"') + b"\n")
    with pytest.raises(ValueError) as err:  # before: a bare UnicodeDecodeError naming neither file nor row
        RLDataset(str(path), tokenizer, max_prompt_length=64)
    assert str(path) in str(err.value) and "line 3 (row 2)" in str(err.value) and "UTF-8" in str(err.value)


def test_parquet_binary_prompt_that_is_not_utf8_names_row_and_column(tokenizer, tmp_path):
    path = tmp_path / "bin.parquet"
    table = pa.table({"prompt": pa.array([b"hello", "caf\u00e9".encode(), b"caf\xe9"], type=pa.binary()),
                      "data_source": ["openai/gsm8k"] * 3})
    pq.write_table(table, path)
    with pytest.raises(ValueError) as err:
        RLDataset(str(path), tokenizer, max_prompt_length=64)
    assert f"{path}: row 2, column 'prompt'" in str(err.value) and "UTF-8" in str(err.value)
    ok = tmp_path / "ok.parquet"
    pq.write_table(table.slice(0, 2), ok)
    ds = RLDataset(str(ok), tokenizer, max_prompt_length=64)
    assert ds[1].raw_prompt == [{"role": "user", "content": "caf\u00e9"}]


def test_lone_surrogate_in_prompt_names_row(tokenizer, tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(_row("1")) + "\n" + json.dumps(_row("1", content="x\udc80")) + "\n")
    with pytest.raises(ValueError, match=r"row 1, column 'prompt'.*UTF-8"):
        RLDataset(str(path), tokenizer, max_prompt_length=64)
