"""GSM8K preprocessing (spec §2.1): columns, ground truth, instruction, flags, offline errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from strive.data import gsm8k

SHARED = Path("/work/shared/data/gsm8k")
REPO = Path(__file__).resolve().parents[2]
INSTRUCTION = 'Let\'s think step by step and output the final answer after "####".'


def test_extract_ground_truth():
    assert gsm8k.extract_ground_truth("a\nb <<1+1=2>>\n#### 1,234") == "1234"
    assert gsm8k.extract_ground_truth("#### -3.5") == "-3.5"
    with pytest.raises(ValueError, match="####"):
        gsm8k.extract_ground_truth("no marker 12")


def test_make_row():
    row = gsm8k.make_row({"question": "How many?", "answer": "2+2=4\n#### 4"}, "test", 5)
    assert row == {
        "data_source": "openai/gsm8k",
        "prompt": [{"role": "user", "content": "How many? " + INSTRUCTION}],
        "ability": "math",
        "reward_model": {"style": "rule", "ground_truth": "4"},
        "extra_info": {"split": "test", "index": 5, "answer": "2+2=4\n#### 4", "question": "How many?"},
    }
    with pytest.raises(ValueError, match="train row 9"):
        gsm8k.make_row({"question": "q", "answer": "none"}, "train", 9)


def _write_jsonl(path, examples):
    path.write_text("".join(json.dumps(e) + "\n" for e in examples))


def test_small_local_jsonl_and_alias_flag(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _write_jsonl(src / "train.jsonl", [{"question": f"q{i}", "answer": f"#### {i},000"} for i in range(3)])
    _write_jsonl(src / "test.jsonl", [{"question": "t", "answer": "#### 7"}])
    written = gsm8k.main(["--local_save_dir", str(tmp_path / "out"), "--local_dataset_path", str(src)])
    train = pq.read_table(written["train"]).to_pylist()
    assert [r["reward_model"]["ground_truth"] for r in train] == ["0000", "1000", "2000"]
    assert [r["extra_info"]["index"] for r in train] == [0, 1, 2]
    out = capsys.readouterr().out
    assert "train: 3 rows" in out and "test: 1 rows" in out and written["test"] in out


def test_hub_parquet_layout(tmp_path):
    main_dir = tmp_path / "src" / "main"
    main_dir.mkdir(parents=True)
    for split, n in (("train", 2), ("test", 1)):
        table = pa.Table.from_pylist([{"question": f"{split}{i}", "answer": f"#### {i}"} for i in range(n)])
        pq.write_table(table, main_dir / f"{split}-00000-of-00001.parquet")
    written = gsm8k.main(["--local_dir", str(tmp_path / "out"), "--local_dataset_path", str(tmp_path / "src")])
    assert pq.read_table(written["train"]).num_rows == 2
    assert pq.read_table(written["test"]).column("extra_info").to_pylist()[0]["question"] == "test0"


def test_missing_split_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="no test split"):
        gsm8k.main(["--local_dir", str(tmp_path / "out"), "--local_dataset_path", str(tmp_path)])


def test_hdfs_dir_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--hdfs_dir.*not supported"):
        gsm8k.main(["--local_dir", str(tmp_path), "--hdfs_dir", "hdfs://x/y"])


def test_offline_without_local_path_exits_with_hint(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    script = REPO / "examples" / "data_preprocess" / "gsm8k.py"
    proc = subprocess.run([sys.executable, str(script), "--local_dir", str(tmp_path)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert "--local_dataset_path" in proc.stderr
    assert not (tmp_path / "train.parquet").exists()


def test_missing_datasets_package_exits_with_hint(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(SystemExit, match="datasets.*--local_dataset_path"):
        gsm8k.main(["--local_dir", str(tmp_path)])


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared GSM8K copy not present")
def test_full_gsm8k_through_the_example_script(tmp_path):
    script = REPO / "examples" / "data_preprocess" / "gsm8k.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--local_dir", str(tmp_path), "--local_dataset_path", str(SHARED)],
        capture_output=True, text=True, check=True,
    )
    assert "train: 7473 rows" in proc.stdout and "test: 1319 rows" in proc.stdout
    train, test = pq.read_table(tmp_path / "train.parquet"), pq.read_table(tmp_path / "test.parquet")
    assert (train.num_rows, test.num_rows) == (7473, 1319)
    assert train.column_names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    first = train.slice(0, 1).to_pylist()[0]
    assert first["reward_model"] == {"style": "rule", "ground_truth": "72"}
    assert first["prompt"][0]["content"].startswith("Natalia sold clips to 48 of her friends")
    assert first["prompt"][0]["content"].endswith("in April and May? " + INSTRUCTION)
    assert first["extra_info"]["answer"].endswith("#### 72") and first["extra_info"]["split"] == "train"
    last_test = test.slice(1318, 1).to_pylist()[0]
    assert last_test["extra_info"] == {**last_test["extra_info"], "split": "test", "index": 1318}
    truths = train.column("reward_model").combine_chunks().field("ground_truth").to_pylist()
    assert all("," not in t for t in truths)
