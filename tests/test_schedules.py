"""Round schedules (federated/schedules.py): the rate of round r is the optax
schedule's value at r - 1, the round is traced (one program for every round), and
bad settings are one-line errors naming the field."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from feddmr_jax import cli
from feddmr_jax.config import LR_SCHEDULES, TrainConfig
from feddmr_jax.errors import ConfigError
from feddmr_jax.federated.aggregation import server_update
from feddmr_jax.federated.schedules import SCHEDULES, round_schedule, server_rate
from feddmr_jax.federated.server_optimizers import build_server_optimizer
from feddmr_jax.models.base import Leaves, ModelParams
from feddmr_jax.timing import CompileWatch
from feddmr_jax.train import build_client_optimizer, build_experiment, run_round

from engine_helpers import tiny_config

LR, EMB = 0.05, 0.2
# Each kind's independent expectation: the optax schedule of step r - 1, or the formula.
EXPECTED = {
    "constant": lambda peak, r: peak,
    "cosine": lambda peak, r: optax.cosine_decay_schedule(peak, 6, alpha=0.1)(r - 1),
    "exponential": lambda peak, r: optax.exponential_decay(peak, 1, 0.7)(r - 1),
    "warmup": lambda peak, r: peak * min(r, 3) / 3,
    "warmup_cosine": lambda peak, r: (peak * r / 3 if r <= 3 else
                                      optax.cosine_decay_schedule(peak, 4, alpha=0.1)(r - 3)),
}


def _train_cfg(kind: str, **extra) -> TrainConfig:
    return TrainConfig(optimizer="sgd", lr=LR, embedding_lr=EMB, lr_schedule=kind,
                       server_lr_schedule=kind, schedule_rounds=6, schedule_warmup_rounds=3,
                       schedule_decay_rate=0.7, schedule_floor=0.1, **extra)


def test_schedule_kinds_match_the_config():
    assert SCHEDULES == LR_SCHEDULES


@pytest.mark.parametrize("kind", SCHEDULES)
def test_client_rates_of_round_r_are_the_schedules_value(kind):
    cfg = _train_cfg(kind)
    cfg.validate()
    params = ModelParams(Leaves({}, {"user": jnp.zeros(2)}),
                         Leaves({"items": jnp.zeros((3, 2))}, {"w": jnp.zeros(())}))
    ones = jax.tree.map(jnp.ones_like, params)
    traces = []

    @jax.jit
    def sgd_step(round_index):
        traces.append(1)                       # runs once per compilation
        opt = build_client_optimizer(cfg, round_index)
        updates, _ = opt.update(ones, opt.init(params), params)
        return updates.shared.dense["w"], updates.shared.tables["items"][0, 0]

    for r in range(1, 10):
        network, embedding = sgd_step(jnp.int32(r))
        # One rounding of a float32 product apart at most (SGD: update = -rate * 1).
        assert float(-network) == pytest.approx(float(EXPECTED[kind](LR, r)), rel=1e-6), r
        assert float(-embedding) == pytest.approx(float(EXPECTED[kind](EMB, r)), rel=1e-6), r
    assert len(traces) == 1


@pytest.mark.parametrize("kind", SCHEDULES)
def test_server_rate_of_round_r_is_the_schedules_value(kind):
    cfg = _train_cfg(kind, server_lr=0.5)
    opt = build_server_optimizer("sgd", server_rate(cfg))
    shared = Leaves({"items": jnp.zeros((2, 1))}, {"w": jnp.zeros(())})
    delta = jax.tree.map(jnp.ones_like, shared)
    state = opt.init(shared)
    traces = []

    @jax.jit
    def step(shared, state):
        traces.append(1)                       # runs once per compilation
        return server_update(shared, state, delta, opt)

    for r in range(1, 10):     # from zeros each time: the step is exactly what moved
        new, state = step(shared, state)           # the count in the state is the round
        assert float(new.dense["w"]) == pytest.approx(float(EXPECTED[kind](0.5, r)),
                                                      rel=1e-6), r
    assert len(traces) == 1


def test_constant_is_the_plain_rate():
    assert round_schedule("constant", 0.3) == 0.3
    opt_a, opt_b = build_client_optimizer(_train_cfg("constant")), build_client_optimizer(
        _train_cfg("constant"), jnp.int32(5))
    params = ModelParams(Leaves({}, {}), Leaves({"items": jnp.zeros((1, 1))}, {}))
    g = jax.tree.map(jnp.ones_like, params)
    a, _ = opt_a.update(g, opt_a.init(params), params)
    b, _ = opt_b.update(g, opt_b.init(params), params)
    assert a.shared.tables["items"][0, 0] == b.shared.tables["items"][0, 0] == np.float32(-EMB)


def test_a_run_with_schedules_compiles_its_round_programs_once():
    cfg = tiny_config(lr_schedule="cosine", schedule_rounds=5, server_optimizer="adam",
                      server_lr=0.05, server_lr_schedule="warmup", schedule_warmup_rounds=2)
    exp = build_experiment(cfg)
    state = exp.algorithm.init(exp.keys["init"])
    state, _ = run_round(exp, state, 1)
    watch = CompileWatch()
    for r in range(2, 5):
        state, _ = run_round(exp, state, r)
    assert watch.compiles == 0
    assert int(state.server_opt_state.count) == 4


def test_schedule_changes_training():
    """Round 1 of a 2-round client warmup trains at half the rate: other params."""
    base = tiny_config(rounds=1)
    warm = tiny_config(rounds=1, lr_schedule="warmup", schedule_warmup_rounds=2)
    states = []
    for cfg in (base, warm):
        exp = build_experiment(cfg)
        state, _ = run_round(exp, exp.algorithm.init(exp.keys["init"]), 1)
        states.append(np.asarray(state.shared.tables["items"]))
    assert np.max(np.abs(states[0] - states[1])) > 1e-4


@pytest.mark.parametrize("values, field", [
    ({"lr_schedule": "linear"}, "train.lr_schedule"),
    ({"server_lr_schedule": "cosine"}, "train.schedule_rounds"),
    ({"lr_schedule": "warmup"}, "train.schedule_warmup_rounds"),
    ({"lr_schedule": "warmup_cosine", "schedule_warmup_rounds": 5, "schedule_rounds": 5},
     "train.schedule_rounds"),
    ({"schedule_rounds": 0}, "train.schedule_rounds"),
    ({"schedule_warmup_rounds": -1}, "train.schedule_warmup_rounds"),
    ({"schedule_decay_rate": 0.0}, "train.schedule_decay_rate"),
    ({"schedule_decay_rate": 1.5}, "train.schedule_decay_rate"),
    ({"schedule_floor": -0.1}, "train.schedule_floor"),
    ({"server_optimizer": "adamw"}, "train.server_optimizer"),
    ({"server_momentum": 1.0}, "train.server_momentum"),
    ({"server_b1": -0.1}, "train.server_b1"),
    ({"server_b2": 1.0}, "train.server_b2"),
    ({"server_eps": 0.0}, "train.server_eps"),
])
def test_bad_server_and_schedule_values_name_the_field(values, field):
    with pytest.raises(ConfigError) as info:
        dataclasses.replace(TrainConfig(), **values).validate()
    assert field in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--server-optimizer", "adamw"], "--server-optimizer: invalid choice: 'adamw'"),
    (["--server-b1", "-0.1"], "train.server_b1 must be in [0, 1)"),
    (["--server-b2", "1.0"], "train.server_b2 must be in [0, 1)"),
    (["--server-momentum", "1.5"], "train.server_momentum must be in [0, 1)"),
    (["--server-eps", "0"], "train.server_eps must be positive"),
    (["--server-lr", "-1"], "train.server_lr must be positive"),
    (["--lr-schedule", "cosine"], "train.schedule_rounds"),
    (["--server-lr-schedule", "step"], "--server-lr-schedule: invalid choice: 'step'"),
    (["--model", "pfedrec", "--lr-schedule", "exponential"],
     "--lr-schedule does not apply to --model pfedrec"),
])
def test_cli_bad_values_are_one_line_errors(argv, message, capsys, tmp_path):
    rc = cli.main(["train", *argv, "--rounds", "1", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("model", ["pfedrec", "fedrap", "local", "popularity"])
def test_own_optimizer_methods_refuse_a_client_schedule_in_the_config(model):
    """lr_schedule is an OWN_OPTIMIZER key: refused when the config is parsed or
    validated, before any experiment is built."""
    from feddmr_jax import config as config_lib

    with pytest.raises(ConfigError, match=f"train.lr_schedule does not apply to model '{model}'"):
        config_lib.build_config({"train": {"model": model, "lr_schedule": "exponential"}})
    with pytest.raises(ConfigError) as info:
        TrainConfig(model=model, lr_schedule="exponential").validate()
    assert f"train.lr_schedule does not apply to model '{model}'" in str(info.value)
    assert "\n" not in str(info.value)
    TrainConfig(model=model).validate()                  # the default (constant) is fine


@pytest.mark.parametrize("train, warned", [
    ({"server_optimizer": "adam"}, True),
    ({"server_optimizer": "yogi"}, True),
    ({"server_optimizer": "adagrad"}, True),
    ({"server_optimizer": "adam", "server_lr": 1.0}, False),    # set on purpose: no warning
    ({"server_optimizer": "adam", "server_lr": 0.03}, False),
    ({"server_optimizer": "momentum"}, False),                  # FedAvgM at lr 1 is FedAvg's scale
    ({}, False),
])
def test_an_adaptive_server_optimizer_at_the_default_rate_warns(train, warned, caplog):
    """Adam, Yogi and Adagrad at FedAvg's server_lr 1.0, left unset, move each parameter by
    about 1 per round: the config says so once (it still builds: the user may want it)."""
    from feddmr_jax.config_io import build_config
    with caplog.at_level("WARNING", logger="feddmr_jax.config_io"):
        cfg = build_config({"train": train})
    cfg.validate()
    hits = [r.getMessage() for r in caplog.records if "server_lr" in r.getMessage()]
    assert len(hits) == int(warned)
    if warned:
        assert train["server_optimizer"] in hits[0] and "train.server_lr" in hits[0]
