"""RLDataset: templating, typed rows, truncation modes, length filter."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

from strive.data.rl_dataset import PromptRow, RLDataset, truncate_ids

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Tokens around the content: <|im_start|> "user\n" | content | <|im_end|> "\n" <|im_start|> "assistant\n"
OVERHEAD = 1 + 5 + 1 + 1 + 1 + 10


def build_tokenizer(chat_template=CHATML, pad=True):
    """Byte-level tokenizer (one token per byte) with ChatML specials; no files, no hub."""
    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    specials = {"pad_token": "<|endoftext|>"} if pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"],
        chat_template=chat_template, **specials,
    )


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _rows(contents, split="train"):
    return [
        {
            "data_source": "openai/gsm8k",
            "prompt": [{"role": "user", "content": c}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(i)},
            "extra_info": {"split": split, "index": 100 + i},
        }
        for i, c in enumerate(contents)
    ]


@pytest.fixture
def parquet(tmp_path):
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(_rows(["ab", "x" * 30, "hello"])), path)
    return path


def test_template_gives_a_typed_row(tokenizer, parquet):
    ds = RLDataset(str(parquet), tokenizer, max_prompt_length=64)
    assert len(ds) == 3
    item = ds[0]
    assert isinstance(item, PromptRow)
    expected = tokenizer.encode("<|im_start|>user\nab<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert len(expected) == OVERHEAD + 2
    assert item.prompt_ids == expected  # unpadded: the rollout pads
    assert item.raw_prompt == [{"role": "user", "content": "ab"}]
    assert item.index == 100 and item.ground_truth == "0" and item.data_source == "openai/gsm8k"
    assert item.columns["ability"] == "math" and "prompt" not in item.columns


@pytest.mark.parametrize(
    "mode, keep",
    [("left", lambda ids, L: ids[-L:]), ("right", lambda ids, L: ids[:L]),
     ("middle", lambda ids, L: ids[: L // 2] + ids[-(L - L // 2):])],
)
def test_truncation_modes(tokenizer, parquet, mode, keep):
    L = 25  # odd, so middle keeps 12 from the front and 13 from the back
    ds = RLDataset(str(parquet), tokenizer, max_prompt_length=L, truncation=mode)
    full = ds.prompt_ids(ds[1].raw_prompt)
    assert len(full) == OVERHEAD + 30
    assert ds[1].prompt_ids == keep(full, L)


def test_truncate_ids_middle_exact():
    assert truncate_ids(list(range(10)), 5, "middle", 0) == [0, 1, 7, 8, 9]
    assert truncate_ids(list(range(10)), 4, "middle", 0) == [0, 1, 8, 9]
    assert truncate_ids([1, 2], 5, "error", 0) == [1, 2]


def test_truncation_error_names_file_row_and_lengths_at_construction(tokenizer, parquet):
    # before: the error came only from ds[1], i.e. when a training batch first reached the row
    with pytest.raises(ValueError) as err:
        RLDataset(str(parquet), tokenizer, max_prompt_length=25)
    message = str(err.value)
    assert str(parquet) in message and "row 1 " in message and f"{OVERHEAD + 30} tokens" in message
    assert "max_prompt_length=25" in message and "1 of 3 rows" in message
    assert "filter_overlong_prompts" in message and "truncation" in message


def test_filter_overlong_prompts(tokenizer, parquet, capsys):
    ds = RLDataset(str(parquet), tokenizer, max_prompt_length=25, filter_overlong_prompts=True)
    assert [ds[i].raw_prompt[0]["content"] for i in range(len(ds))] == ["ab", "hello"]
    assert f"dropped 1 of 3 rows of {parquet}" in capsys.readouterr().out
    assert ds[1].index == 102  # extra_info.index survives the filter


def test_many_files_json_jsonl_and_tilde(tokenizer, tmp_path, monkeypatch, parquet):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "a.json").write_text(json.dumps(_rows(["j1", "j2"])))
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in _rows(["l1"])) + "\n")
    ds = RLDataset(["~/a.json", str(tmp_path / "b.jsonl"), "~/train.parquet"], tokenizer, max_prompt_length=64)
    assert [ds[i].raw_prompt[0]["content"] for i in range(len(ds))] == ["j1", "j2", "l1", "ab", "x" * 30, "hello"]


def test_max_samples(tokenizer, tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _rows([f"p{i}" for i in range(20)])))
    first = RLDataset(str(path), tokenizer, max_prompt_length=64, max_samples=4)
    assert [first[i].index for i in range(4)] == [100, 101, 102, 103]
    rand_a = RLDataset(str(path), tokenizer, max_prompt_length=64, max_samples=4, shuffle_subset_seed=1)
    rand_b = RLDataset(str(path), tokenizer, max_prompt_length=64, max_samples=4, shuffle_subset_seed=1)
    picked = [rand_a[i].index for i in range(4)]
    assert picked == [rand_b[i].index for i in range(4)] and picked != [100, 101, 102, 103]


def test_index_defaults_to_row_number(tokenizer, tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}]}) + "\n")
    item = RLDataset(str(path), tokenizer, max_prompt_length=64, return_raw_chat=False)[0]
    assert item.index == 0 and item.ground_truth is None and item.raw_prompt is None


def test_missing_chat_template_and_custom_template(tmp_path, parquet):
    bare = build_tokenizer(chat_template=None)
    with pytest.raises(ValueError, match="custom_chat_template"):
        RLDataset(str(parquet), bare, max_prompt_length=64)
    plain = "{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    ds = RLDataset(str(parquet), bare, max_prompt_length=8, custom_chat_template=plain, truncation="right")
    assert ds[0].prompt_ids == bare.encode("ab>", add_special_tokens=False)


def test_chat_template_kwargs_are_passed(tokenizer, parquet):
    template = "{% if shout %}!{% endif %}{{ messages[0]['content'] }}"
    ds = RLDataset(str(parquet), tokenizer, max_prompt_length=8, custom_chat_template=template,
                   chat_template_kwargs={"shout": True}, truncation="right")
    assert ds[0].prompt_ids == tokenizer.encode("!ab", add_special_tokens=False)


def test_config_errors(tokenizer, parquet, tmp_path):
    with pytest.raises(ValueError, match="truncation='cut'"):
        RLDataset(str(parquet), tokenizer, truncation="cut")
    with pytest.raises(KeyError, match="'messages'"):
        RLDataset(str(parquet), tokenizer, prompt_key="messages")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        RLDataset(str(tmp_path / "missing.parquet"), tokenizer)
