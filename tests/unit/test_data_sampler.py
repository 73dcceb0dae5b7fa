"""ResumableSampler: a resumed run yields exactly the batches of an uninterrupted one."""

import pytest

from strive.data.sampler import ResumableSampler


def _run(sampler, epochs):
    out = []
    for _ in range(sampler.epoch, epochs):
        out.extend(list(batch) for batch in sampler)
    return out


def test_epochs_are_permutations_and_differ():
    sampler = ResumableSampler(10, batch_size=3, seed=5)
    assert len(sampler) == 3
    first, second = list(sampler), list(sampler)
    assert sampler.epoch == 2
    assert all(len(b) == 3 for b in first + second)
    assert len(set(sum(first, []))) == 9  # drop_last: one index left out, none repeated
    assert first != second


def test_no_shuffle_and_no_drop_last():
    sampler = ResumableSampler(7, batch_size=3, shuffle=False, drop_last=False)
    assert len(sampler) == 3
    assert list(sampler) == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("stop_after", [0, 1, 2, 4, 5, 7, 9])
def test_resume_equals_uninterrupted(stop_after):
    epochs = 3
    reference = _run(ResumableSampler(13, batch_size=4, seed=11), epochs)
    assert len(reference) == 9

    first = ResumableSampler(13, batch_size=4, seed=11)
    seen, state = [], None
    for _ in range(epochs):
        for batch in first:
            seen.append(batch)
            if len(seen) == stop_after:
                state = first.state_dict()  # checkpoint taken after training on this batch
                break
        if state is not None:
            break
    if stop_after == 0:
        state = first.state_dict()

    resumed = ResumableSampler(13, batch_size=4, seed=11)
    resumed.load_state_dict(state)
    assert seen + _run(resumed, epochs) == reference


def test_state_at_epoch_boundary_resumes_into_next_epoch():
    sampler = ResumableSampler(8, batch_size=4, seed=0)
    it = iter(sampler)
    next(it), next(it)  # both batches handed out, epoch not yet closed
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (0, 2)
    resumed = ResumableSampler(8, batch_size=4, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == [] and resumed.epoch == 1  # finishing epoch 0 yields nothing more
    order = resumed.epoch_order(1)
    assert list(resumed) == [order[:4], order[4:]]


def test_mismatched_state_is_refused():
    state = ResumableSampler(10, batch_size=2, seed=1).state_dict()
    with pytest.raises(ValueError, match="batch_size=2.*batch_size=5"):
        ResumableSampler(10, batch_size=5, seed=1).load_state_dict(state)


def test_too_small_dataset():
    with pytest.raises(ValueError, match="3 rows, fewer than one batch of 8"):
        ResumableSampler(3, batch_size=8)


def test_next_batch_crosses_epochs_and_resumes():
    from strive.data.sampler import ResumableSampler

    a = ResumableSampler(10, 4, shuffle=True, seed=3)
    seq = [a.next_batch() for _ in range(5)]  # 2 batches per epoch → crosses two epoch boundaries
    assert a.epoch == 2 and seq[0] != seq[2]
    b = ResumableSampler(10, 4, shuffle=True, seed=3)
    first = [b.next_batch() for _ in range(3)]
    c = ResumableSampler(10, 4, shuffle=True, seed=3)
    c.load_state_dict(b.state_dict())
    assert first + [c.next_batch(), c.next_batch()] == seq
