"""The names a user may write are exactly the names the code dispatches on.

Each list has one home (strive.algos.names for estimators, loss-agg modes and KL kinds;
strive.tracking.backends.BACKEND_NAMES for loggers) and config imports it, so config and the math cannot drift
by copy. What can still drift is a list and its dispatcher: a name added to the list with no branch behind it,
a branch that aliases another name, or a property table (CRITIC_ESTIMATORS, GROUP_ESTIMATORS) that no longer
says what the estimator reads. So every listed name is run through its dispatcher on small tensors and through
`prepare`, and names verl or a typo could bring are refused by both, with the key in config's message.

    pytest tests/unit/test_names.py
"""

import itertools
import sys
from unittest import mock

import pytest
import torch

from strive.algos import names
from strive.algos.advantages import compute_advantages
from strive.algos.kl import kl_penalty
from strive.algos.losses import aggregate_loss
from strive.config import ConfigError, needs_critic, prepare
from strive.tracking.backends import BACKEND_NAMES, EXTERNAL, open_backend
from strive.tracking.tracker import Tracker

# Names that must be refused everywhere: verl estimators strive lacks, near-misses, a doubled '+'.
UNKNOWN_ESTIMATORS = ("opo", "grpo_passk", "gpg", "rloo_vectorized", "GRPO")
UNKNOWN_KL = ("k4", "KL", "k3++", "low_var")
UNKNOWN_AGG = ("token-sum", "seq-mean", "mean")
UNKNOWN_LOGGERS = ("neptune", "wandbb", "Console")

KL_KEYS = ("algorithm.kl_penalty", "actor_rollout_ref.actor.kl_loss_type")
AGG_KEYS = ("actor_rollout_ref.actor.loss_agg_mode", "critic.loss_agg_mode")


def _refused(override: str, key: str) -> str:
    """config's message for an override it must refuse; the message names the key."""
    with pytest.raises(ConfigError) as info:
        prepare([override])
    assert f"{key}=" in str(info.value) or f"{key}:" in str(info.value)
    return str(info.value)


def _advantage_inputs() -> dict:
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(4, 5, dtype=torch.float64)  # (B, T)
    mask[1, 3:] = 0
    return dict(
        token_rewards=torch.randn(4, 5, generator=g, dtype=torch.float64) * mask,  # (B, T)
        mask=mask,
        group_ids=torch.tensor([0, 0, 1, 1]),  # (B,)
        values=torch.randn(4, 5, generator=g, dtype=torch.float64),  # (B, T)
        reward_baselines=torch.randn(4, generator=g, dtype=torch.float64),  # (B,)
        gamma=0.9,
        lam=0.8,
    )


def test_property_tables_are_subsets_of_their_lists():
    assert set(names.CRITIC_ESTIMATORS) <= set(names.ESTIMATORS)
    assert set(names.GROUP_ESTIMATORS) <= set(names.ESTIMATORS)
    assert not set(names.KL_NOT_IMPLEMENTED) & set(names.KL_KINDS)
    for table in (names.ESTIMATORS, names.AGG_MODES, names.KL_KINDS, BACKEND_NAMES):
        assert len(set(table)) == len(table)


@pytest.mark.parametrize("name", names.ESTIMATORS)
def test_every_estimator_dispatches_and_reads_what_its_tables_say(name):
    inputs = _advantage_inputs()
    adv, ret = compute_advantages(name, **inputs)
    assert adv.shape == ret.shape == (4, 5) and adv.isfinite().all()
    for arg, table in (("values", names.CRITIC_ESTIMATORS), ("group_ids", names.GROUP_ESTIMATORS)):
        if name in table:
            with pytest.raises(ValueError, match=arg):
                compute_advantages(name, **{**inputs, arg: None})
        else:
            torch.testing.assert_close(compute_advantages(name, **{**inputs, arg: None})[0], adv)


def test_no_two_estimators_share_a_branch():
    inputs = _advantage_inputs()
    adv = {name: compute_advantages(name, **inputs)[0] for name in names.ESTIMATORS}
    for a, b in itertools.combinations(names.ESTIMATORS, 2):
        assert not torch.allclose(adv[a], adv[b]), (a, b)


@pytest.mark.parametrize("name", names.ESTIMATORS)
def test_config_accepts_every_estimator_and_derives_the_critic_from_the_table(name):
    cfg = prepare([f"algorithm.adv_estimator={name}"]).config
    assert cfg.critic.enable == needs_critic(cfg) == (name in names.CRITIC_ESTIMATORS)
    assert needs_critic(prepare([f"algorithm.adv_estimator={name}", "critic.enable=True"]).config)


@pytest.mark.parametrize("name", UNKNOWN_ESTIMATORS)
def test_unknown_estimator_is_refused_by_both(name):
    with pytest.raises(ValueError, match=repr(name)):
        compute_advantages(name, **_advantage_inputs())
    message = _refused(f"algorithm.adv_estimator={name}", "algorithm.adv_estimator")
    assert message.endswith(", ".join(names.ESTIMATORS))


@pytest.mark.parametrize("kind", [k + plus for k in names.KL_KINDS for plus in ("", "+")])
def test_every_kl_kind_works_in_kl_penalty_and_config(kind):
    logp = torch.tensor([[-1.0, -0.5, -2.0]], dtype=torch.float64, requires_grad=True)  # (B, T)
    ref = torch.tensor([[-1.5, -0.5, -0.1]], dtype=torch.float64)  # (B, T)
    kl = kl_penalty(logp, ref, kind)  # (B, T)
    assert kl.shape == (1, 3) and kl.isfinite().all()
    kl.sum().backward()
    assert logp.grad.isfinite().all()
    cfg = prepare([f"{key}={kind}" for key in KL_KEYS]).config
    assert cfg.algorithm.kl_penalty == cfg.actor_rollout_ref.actor.kl_loss_type == kind


@pytest.mark.parametrize("kind", [k + plus for k in names.KL_NOT_IMPLEMENTED for plus in ("", "+")])
def test_unimplemented_kl_kind_is_refused_by_both_with_the_same_reason(kind):
    reason = names.KL_NOT_IMPLEMENTED[names.split_kl_kind(kind)[0]]
    x = torch.zeros(2, 3)
    with pytest.raises(NotImplementedError, match=reason):
        kl_penalty(x, x, kind)
    for key in KL_KEYS:
        assert reason in _refused(f"{key}={kind}", key)


@pytest.mark.parametrize("kind", UNKNOWN_KL + tuple(k + "+" for k in UNKNOWN_KL))
def test_unknown_kl_kind_is_refused_by_both(kind):
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=repr(kind).replace("+", r"\+")):
        kl_penalty(x, x, kind)
    for key in KL_KEYS:
        assert ", ".join(names.KL_KINDS) in _refused(f"{key}={kind}", key)


def test_every_agg_mode_works_and_no_two_agree():
    g = torch.Generator().manual_seed(1)
    loss = torch.rand(3, 6, generator=g, dtype=torch.float64)  # (B, T)
    mask = torch.tensor([[1.0] * 6, [1.0] * 2 + [0.0] * 4, [1.0] * 4 + [0.0] * 2], dtype=torch.float64)  # (B, T)
    out = {mode: aggregate_loss(loss, mask, mode) for mode in names.AGG_MODES}
    assert all(v.shape == () and v.isfinite() for v in out.values())
    for a, b in itertools.combinations(names.AGG_MODES, 2):
        assert not torch.allclose(out[a], out[b]), (a, b)


@pytest.mark.parametrize("mode", names.AGG_MODES)
def test_config_accepts_every_agg_mode(mode):
    cfg = prepare([f"{key}={mode}" for key in AGG_KEYS]).config
    assert cfg.actor_rollout_ref.actor.loss_agg_mode == cfg.critic.loss_agg_mode == mode


@pytest.mark.parametrize("mode", UNKNOWN_AGG)
def test_unknown_agg_mode_is_refused_by_both(mode):
    with pytest.raises(ValueError, match=repr(mode)):
        aggregate_loss(torch.ones(2, 3), torch.ones(2, 3), mode)
    for key in AGG_KEYS:
        assert _refused(f"{key}={mode}", key).endswith(", ".join(names.AGG_MODES))


@pytest.mark.parametrize("name", BACKEND_NAMES)
def test_every_logger_opens_a_backend_and_config_accepts_it(name, tmp_path, monkeypatch):
    # every backend library, installed or not, is replaced by a stand-in, so each name reaches its branch
    for module in {"tensorboard", "torch.utils.tensorboard"} | {m for m, _ in EXTERNAL.values()}:
        monkeypatch.setitem(sys.modules, module, mock.MagicMock())
    backend = open_backend(name, "proj", "exp", str(tmp_path), config=None, total_steps=None)
    assert backend is not None
    backend.finish()
    assert prepare([f"trainer.logger=[{name}]"]).config.trainer.logger == [name]


@pytest.mark.parametrize("name", UNKNOWN_LOGGERS)
def test_unknown_logger_is_refused_by_both(name, tmp_path):
    with pytest.raises(ValueError, match=repr(name)):
        Tracker([name], "proj", "exp", str(tmp_path))
    assert _refused(f"trainer.logger=[{name}]", "trainer.logger").endswith(", ".join(BACKEND_NAMES))
