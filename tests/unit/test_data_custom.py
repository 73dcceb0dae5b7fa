"""data.custom_cls (a user RLDataset subclass by path + name) and the data keys as the trainer passes them."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_data_rl_dataset import OVERHEAD, build_tokenizer

from strive.config import prepare
from strive.data.custom import dataset_class
from strive.data.rl_dataset import RLDataset

USER_FILE = '''
from strive.data.rl_dataset import RLDataset


class QuestionDataset(RLDataset):
    """Prompts from a plain `question` column instead of chat messages."""

    def _messages(self, row, index):
        return [{"role": "user", "content": "Q: " + row["question"]}]


class NotADataset:
    pass
'''


@pytest.fixture
def files(tmp_path):
    rows = [{"question": q, "prompt": "unused", "data_source": "x", "reward_model": {"ground_truth": "1"}}
            for q in ("one", "three", "a much longer question that goes on")]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (tmp_path / "user_ds.py").write_text(USER_FILE)
    return tmp_path


def _build(files, *overrides):
    from strive.trainer.setup import _dataset

    cfg = prepare([f"data.train_files={files / 'train.parquet'}", *overrides]).config
    return _dataset(cfg.data.train_files, build_tokenizer(), cfg, -1)


def test_custom_cls_builds_the_users_subclass(files):
    ds = _build(files, f"data.custom_cls.path={files / 'user_ds.py'}", "data.custom_cls.name=QuestionDataset")
    assert type(ds).__name__ == "QuestionDataset"
    assert ds[0].raw_prompt == [{"role": "user", "content": "Q: one"}]


def test_custom_cls_errors_name_the_key(files):
    with pytest.raises(ValueError, match="data.custom_cls.name is not"):
        dataset_class(str(files / "user_ds.py"), None)
    with pytest.raises(AttributeError, match="has no 'Missing'"):
        dataset_class(str(files / "user_ds.py"), "Missing")
    with pytest.raises(TypeError, match="must be a subclass of strive.data.rl_dataset.RLDataset"):
        dataset_class(str(files / "user_ds.py"), "NotADataset")
    with pytest.raises(FileNotFoundError, match="data.custom_cls.path="):
        dataset_class(str(files / "nope.py"), "X")
    assert dataset_class(None, None) is RLDataset
    assert dataset_class("strive.data.rl_dataset", "RLDataset") is RLDataset  # a module name works too


def test_filter_and_truncation_keys_reach_the_dataset(files):
    common = [f"data.custom_cls.path={files / 'user_ds.py'}", "data.custom_cls.name=QuestionDataset",
              f"data.max_prompt_length={OVERHEAD + 8}"]
    assert len(_build(files, *common, "data.filter_overlong_prompts=True")) == 2
    kept = _build(files, *common, "data.truncation=left")
    assert len(kept) == 3 and len(kept[2].prompt_ids) == OVERHEAD + 8
    with pytest.raises(ValueError, match="max_prompt_length"):
        _build(files, *common)[2]  # truncation=error (the default) refuses the long row when it is read
