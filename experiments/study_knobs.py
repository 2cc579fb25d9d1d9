"""The FedDMR study's search space: each method's knobs in search order and their values, the
methods run without a search (the popularity floor, FedDMR's ablations), and the committed
starting points (``experiments/configs/study_starts.toml``).

A point is ``{"section.key": value}`` on top of the method's reference values
(:func:`canonical` drops the settings equal to them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from feddmr_jax import config as config_lib
from feddmr_jax.errors import ConfigError
from feddmr_jax.method_configs import get_spec
from feddmr_jax.methods import get_method

Point = dict[str, Any]        # {"section.key": value} on top of the method's reference values
STARTS_FILE = Path(__file__).resolve().parent / "configs" / "study_starts.toml"


class Knob(NamedTuple):
    """One coordinate of the search.

    ``values``: each either a value of ``key``, or a dict of settings (a compound value, e.g.
    an optimizer with its learning rates). With ``scale`` the values are factors on the
    current point's value of ``key`` (learning rates, whose scale depends on the optimizer).
    With ``by`` (a conditional knob), ``values`` maps each value of the key ``by`` to the
    values tried when the current point holds it (a server lr grid per server optimizer).
    """

    key: str
    values: Any
    scale: bool = False
    by: str | None = None


_SGD = {"train.optimizer": "sgd", "train.lr": 0.1}
# The search order and values (issue 13). The layer form and the attention input first: the
# post-norm model underfits (issue 13: train loss 0.486 with attention against 0.411 without, at
# 40 rounds) and they set the cost of every later point (ml-100k s/round on the idle 2-core CPU:
# history 50, 2 layers 18.8; history 0, 2 layers 11.4; history 10, 1 layer 7.1; no attention
# 1.4), then the training dynamics (every curve of the issue was still rising), the
# aggregation, the architecture's widths, and last the evaluation mode. SGD's learning rates are
# guesses (a mean loss gives each item row ~1/batch of the gradient, hence the large embedding
# lr); the lr knobs rescale whichever optimizer is current.
FEDDMR_KNOBS = (
    Knob("model.norm", ("post", "pre")),       # pre: zero-init branches, starts as no-attention
    Knob("model.history_len", (0, 10, 50)),    # 0: pair attention over [user, item] only
    Knob("model.layers", (1, 2)),
    Knob("train.embedding_lr", (0.3, 1.0, 3.0), scale=True),   # embeddings (items, user)
    Knob("train.lr", (0.3, 1.0, 3.0), scale=True),             # attention layers + head
    Knob("train.local_epochs", (1, 2, 5)),
    Knob("train.mu", (0.0, 1e-3, 1e-2, 1e-1)),
    Knob("train.prox_scope", ("all", "dense")),
    Knob("train.optimizer", ("adam", {**_SGD, "train.embedding_lr": 10.0},
                             {**_SGD, "train.embedding_lr": 100.0})),
    Knob("train.batch_size", (64, 256, 1024)),
    Knob("model.heads", (1, 2, 4, 8)),
    Knob("model.dim", (16, 32, 64)),
    Knob("model.ffn_dim", (None, 32, 128)),    # None: 2 * dim
    Knob("model.dropout", (0.0, 0.1, 0.2)),
    Knob("model.init_scale", (0.03, 0.1, 0.3)),
    Knob("train.table_mean", ("touched", "participants")),
    Knob("train.eval_mode", ("global", "local")),
)
# The server step (issue 25 item 5), last for every searched method, so the search path up to
# it is the one of issue 13. First the optimizer, each at a central server lr: sgd at 1
# (FedAvg), momentum at 0.1 (with the default beta 0.9 its steady step 0.1 / (1 - 0.9) is
# FedAvg's), adam / yogi / adagrad at 0.1 (the middle of Reddi et al.'s log grid 1e-2..1, with
# tau = train.server_eps 1e-3); then the server lr on that optimizer's own grid (sgd: 1 only;
# momentum: from FedAvg's step to Hsu et al.'s eta = 1). beta_1, beta_2, tau, momentum: the
# config's defaults.
SERVER_LRS = {"sgd": (1.0,), "momentum": (0.1, 0.3, 1.0), "adam": (0.01, 0.1, 1.0),
              "yogi": (0.01, 0.1, 1.0), "adagrad": (0.01, 0.1, 1.0)}
SERVER_KNOBS = (
    Knob("train.server_optimizer", tuple(
        {"train.server_optimizer": name, "train.server_lr": 1.0 if name == "sgd" else 0.1}
        for name in SERVER_LRS)),
    Knob("train.server_lr", SERVER_LRS, by="train.server_optimizer"),
)
# Baselines: the same procedure; each list holds the reference values (methods/*.py) and the
# points of experiments/compare.py's grid. FedRAP's learning rates span 2.5 (tables) and 3.7
# (head) decades around its reference (200 / 0.5) and its README's ML-100K values (1000 /
# 1e-4, its second start), to tell a learning-rate problem from a limit of the method.
# FedRAP's distance weight lam comes first, 0 included: its loss *subtracts*
# lam * mean((D_u - C)^2), which is unbounded below. The first Lastfm-2K search (lam fixed at
# the reference 0.1 by its 12-point budget, lam being 4th) ended with every point diverged or at
# chance (validation HR@10 0.10-0.15), and the diverged ones had reached 0.41-0.47 before the
# term ran away (docs/results.md): lam decides whether FedRAP trains at all, so it is searched
# before the rates. Its runs stay under runs/fedrap/ beside the new search's.
KNOBS: dict[str, tuple[Knob, ...]] = {
    "feddmr": FEDDMR_KNOBS + SERVER_KNOBS,
    "fedmf": (Knob("train.embedding_lr", (0.02, 0.05, 0.1, 0.2, 0.5)),
              Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
              Knob("train.mu", (0.0, 1e-3, 1e-2)), Knob("model.dim", (16, 32, 64)),
              Knob("model.init_scale", (0.03, 0.1, 0.3)),
              Knob("train.table_mean", ("touched", "participants"))) + SERVER_KNOBS,
    "fedncf": (Knob("train.embedding_lr", (0.02, 0.05, 0.1, 0.2, 0.5)),
               Knob("train.lr", (0.001, 0.003, 0.01, 0.03)),
               Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
               Knob("train.mu", (0.0, 1e-3, 1e-2)), Knob("model.dim", (16, 32, 64)),
               Knob("train.table_mean", ("touched", "participants"))) + SERVER_KNOBS,
    "pfedrec": (Knob("model.lr", (0.03, 0.1, 0.3)), Knob("model.lr_eta", (20.0, 40.0, 80.0, 160.0)),
                Knob("train.local_epochs", (1, 2, 5)), Knob("train.batch_size", (64, 256, 1024)),
                Knob("model.dim", (16, 32, 64)), Knob("model.init_scale", (0.1, 1.0)),
                Knob("train.table_mean", ("participants", "touched")),
                Knob("train.eval_mode", ("local", "global"))) + SERVER_KNOBS,
    "fedrap": (Knob("model.lam", (0.0, 0.01, 0.1, 1.0)),
               Knob("model.lr_args", (10.0, 30.0, 100.0, 200.0, 1000.0, 3000.0)),
               Knob("model.lr_network", (1e-4, 1e-3, 1e-2, 0.1, 0.5)),
               Knob("model.mu", (0.0, 1e-3, 0.1)), Knob("train.local_epochs", (5, 10)),
               Knob("train.batch_size", (512, 2048)), Knob("model.weight_decay", (0.0, 1e-4)),
               Knob("model.dim", (16, 32, 64))) + SERVER_KNOBS,
}
# Run without a search: the popularity floor (its reference, no learning: with every client in
# a round one round is the global count, so it runs 1 round) and FedDMR's ablations, at the
# point FedDMR's study chose, with the confirmation seeds and rounds.
FLOOR = "popularity"
FLOOR_ROUNDS = 1
ABLATIONS: dict[str, Point] = {"feddmr_no_attention": {"model.attention": False},
                               "feddmr_1layer": {"model.layers": 1}}
METHODS = (*KNOBS, FLOOR, *ABLATIONS)          # --methods' names, in the order they run
BASELINES = ("fedmf", "fedncf", "pfedrec", "fedrap")   # FedDMR's competitors (not the floor)


def model_of(method: str) -> str:
    """The ``train.model`` of a study method (an ablation's is ``feddmr``)."""
    return "feddmr" if method in ABLATIONS else method


def floor_extra(extra: Point) -> Point:
    """``--set`` values the popularity floor can take: no [model] field (it has none), no key
    of an optimizer or a loss (it has neither)."""
    spec = get_spec(FLOOR)
    dropped = {*spec.unused_train, *spec.train_defaults, "l2"}
    return {k: v for k, v in extra.items()
            if k.startswith("data.") or (k.startswith("train.") and k[6:] not in dropped)}


def _round6(value: Any) -> Any:
    return float(f"{value:.6g}") if isinstance(value, float) else value


def resolved(cfg: config_lib.RunConfig, key: str) -> Any:
    """The value ``cfg`` holds for ``"section.key"`` (``train.embedding_lr`` None: ``lr``)."""
    section, _, name = key.partition(".")
    value = getattr(getattr(cfg, section), name)
    if key == "train.embedding_lr" and value is None:
        return cfg.train.lr
    if key == "train.eval_mode" and value in (None, "default"):
        return get_method(cfg.train.model).eval_mode
    return value


def knob_values(knob: Knob, current: config_lib.RunConfig) -> tuple[Any, ...]:
    """The values ``knob`` tries at the current point (a conditional knob: those of the
    current value of ``knob.by``; none when it has no entry)."""
    if knob.by is None:
        return tuple(knob.values)
    return tuple(knob.values.get(resolved(current, knob.by), ()))


def all_values(knob: Knob) -> list[Any]:
    """Every value ``knob`` may try, whatever the point."""
    if knob.by is None:
        return list(knob.values)
    return [v for values in knob.values.values() for v in values]


def settings(knob: Knob, value: Any, current: config_lib.RunConfig) -> Point:
    """The settings one knob value stands for, at the current point's config."""
    if isinstance(value, dict):
        return dict(value)
    if knob.scale:
        return {knob.key: _round6(resolved(current, knob.key) * value)}
    return {knob.key: value}


def canonical(point: Point, reference: config_lib.RunConfig) -> Point:
    """``point`` without the settings equal to the reference values, keys sorted."""
    return {k: _round6(v) for k, v in sorted(point.items()) if v != resolved(reference, k)}


def knobs_for(method: str, order: str | None) -> tuple[Knob, ...]:
    """``KNOBS[method]``, or with ``--knobs`` those of its knobs named there, in that order."""
    if not order:
        return KNOBS[method]
    keys = [k.strip() for k in order.split(",") if k.strip()]
    known = {k.key: k for k in KNOBS[method]}
    return tuple(known[k] for k in keys if k in known)


def knob_keys(method: str, points: list[Point]) -> list[str]:
    """Every key the method's knobs (compound values included) or ``points`` set."""
    knobs = KNOBS.get(model_of(method), ())
    keys = [knob.key for knob in knobs]
    keys += [k for knob in knobs for v in all_values(knob) if isinstance(v, dict) for k in v]
    keys += [k for p in points for k in p]
    return list(dict.fromkeys(keys))


def knob_rows(dataset: str, methods: list[str], order: str | None,
              starts: Mapping[str, list[Point]]) -> list[dict]:
    """``study_knobs.csv``: each searched method's starting points (order 0, knob ``start``)
    and knobs, in search order, with their values."""
    rows = []
    for m in methods:
        if m not in KNOBS:
            continue
        rows += [{"dataset": dataset, "method": m, "order": 0, "knob": "start", "scale": False,
                  "by": "", "values": json.dumps(p)} for p in [{}, *starts.get(m, [])]]
        rows += [{"dataset": dataset, "method": m, "order": i, "knob": k.key, "scale": k.scale,
                  "by": k.by or "", "values": json.dumps(
                      k.values if k.by else list(k.values))}
                 for i, k in enumerate(knobs_for(m, order), 1)]
    return rows


def flatten(tables: Mapping[str, Any], where: str) -> Point:
    """``{section: {key: value}}`` (a TOML method table) as ``{"section.key": value}``."""
    out: Point = {}
    for section, values in tables.items():
        if section not in ("data", "model", "train") or not isinstance(values, Mapping):
            raise ConfigError(f"{where}: [{section}] is not a [data], [model] or [train] table")
        out.update({f"{section}.{key}": value for key, value in values.items()})
    return out


def read_starts(path: str | Path | None) -> dict[str, list[Point]]:
    """The second starting points of each method's search, ``{method: [point]}``, from a TOML
    file of ``[<method>.<section>]`` tables (None or ``none``: the reference only).

    Raises:
      ConfigError: unreadable file, unknown method or section.
    """
    if path is None or str(path) == "none":
        return {}
    raw = config_lib.read_config_file(path)
    unknown = sorted(set(raw) - set(KNOBS))
    if unknown:
        raise ConfigError(f"{path}: unknown method(s) {', '.join(unknown)} "
                          f"(searched methods: {', '.join(KNOBS)})")
    return {method: [flatten(tables, f"{path} [{method}]")] for method, tables in raw.items()}
