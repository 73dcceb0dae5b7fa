"""The demo's data and summary: held-out problems are unseen, and the before/after examples come from the
validation dumps (right = the number after the last `####`)."""

import json

from strive.data.synthetic import SHOW_WORK, make_rows
from strive.demo import fixed_examples


def test_test_split_holds_no_training_question():
    train = make_rows(2000, "train", 1)
    seen = frozenset(r["extra_info"]["question"] for r in train)
    test = make_rows(200, "test", 1, exclude=seen)
    assert len(test) == 200 and not seen & {r["extra_info"]["question"] for r in test}
    assert [r["extra_info"]["index"] for r in test] == list(range(200))
    unfiltered = {r["extra_info"]["question"] for r in make_rows(200, "test", 1)}
    assert seen & unfiltered  # at this size some would repeat without the filter, so the test means something


def _dump(path, step, rows):
    with open(path / f"{step}.jsonl", "w") as fh:
        for question, gts, output, n in rows:
            fh.write(json.dumps({"input": f"system\nbe nice\nuser\n{question} {SHOW_WORK}\nassistant\n",
                                 "output": output, "gts": gts, "score": 0.0, "response_length": n,
                                 "finish_reason": "length" if n >= 64 else "stop", "step": step}) + "\n")


def test_fixed_examples_pick_wrong_before_and_right_after(tmp_path):
    ann, ben, kai = "Ann has 2 and gets 3.", "Ben has 4 bags of 2.", "Kai had 9, gave 1."
    loop = "9 - 1 = 8 and " * 9
    _dump(tmp_path, 0, [(ann, "5", "#### 6", 3), (ben, "8", "4 * 2 = 8\n#### 8", 9), (kai, "8", loop, 64)])
    _dump(tmp_path, 12, [(ann, "5", "2 + 3 = 5\n#### 5", 9), (ben, "8", "#### 6", 3),
                         (kai, "8", "9 - 1 = 8\n#### 8", 9)])
    lines = fixed_examples(str(tmp_path))
    assert lines[0] == "held-out problems right at step 12 but not at step 0: 2 (and 1 the other way), of 3"
    assert lines[1] == "  Ann has 2 and gets 3.  (answer 5)"
    assert lines[2] == "    step  0: #### 6" and lines[3] == "    step 12: 2 + 3 = 5 #### 5"
    assert lines[-2:] == ["step 0: 1 of 3 validation responses used the whole length budget",
                          "step 12: 0 of 3 validation responses used the whole length budget"]
    assert fixed_examples(str(tmp_path / "missing")) == []


def test_demo_settings_follow_the_compute_dtype():
    """float32 (a CPU without bf16 units) gets the lower learning rate and checkpointing its seeds were run with;
    bf16 keeps the settings of the bf16 results; the resolved config carries them."""
    from unittest import mock

    from strive.config import prepare
    from strive.demo import compute_dtype, demo_overrides

    def keys(dtype):
        items = demo_overrides("/d", "/o", "/m", 12, 1, 2, dtype)
        return dict(item.split("=", 1) for item in items)

    fp32, bf16 = keys("float32"), keys("bfloat16")
    assert (fp32["actor_rollout_ref.actor.optim.lr"], bf16["actor_rollout_ref.actor.optim.lr"]) == ("3e-5", "5e-5")
    assert fp32["actor_rollout_ref.model.enable_gradient_checkpointing"] == "True"
    assert bf16["actor_rollout_ref.model.enable_gradient_checkpointing"] == "False"
    with mock.patch("strive.config.cpu_dtype.cpu_has_bf16", lambda info=None: False):
        assert compute_dtype() == "float32"
    with mock.patch("strive.config.cpu_dtype.cpu_has_bf16", lambda info=None: True):
        assert compute_dtype() == "bfloat16"
    items = [i for i in demo_overrides("/d", "/o", "/m", 12, 1, 2, "float32") if not i.startswith("data.")]
    run = prepare(items)
    assert run.config.actor_rollout_ref.actor.optim.lr == 3e-5
    assert run.config.actor_rollout_ref.model.enable_gradient_checkpointing is True
