"""What the server receives and stores in a round, and a check that nothing private is among it.

The simulator runs clients and server in one process, so "who holds what" is a
convention of the code; this module makes it checkable. :func:`audit_round`
traces the real round functions of a
:class:`~feddmr_jax.federated.algorithm.FederatedAlgorithm` with
``jax.eval_shape`` (no computation) and lists every leaf, with its pytree path
and shape, in one of these roles:

Server side
  ``upload``        what one client sends: every field of the client's
                    ``ClientOutput`` except ``private`` (``delta``, ``loss``,
                    ``num_examples``, ``rows``, ``row_mask``); under secure
                    aggregation, the masked dense upload
                    (:class:`~feddmr_jax.federated.secure_round.SecureUpload`) and ``loss``.
  ``server_round``  the round's ``Accumulator`` after a chunk step (the
                    server's running sums, masking graph included) and the
                    chunk's loss sum.
  ``server_state``  ``FedState.shared`` and ``FedState.server_opt_state`` after
                    the server step (kept across rounds).

Client side (listed for reference, never sent)
  ``client_store``  ``FedState.private_store``: every client's private params,
                    stacked ``[U, ...]`` for simulation convenience; row ``u`` is
                    client ``u``'s own storage (it also holds PFedRec's local
                    evaluation view).
  ``client_data``   the round's ``ChunkData``: each client's examples,
                    negatives and memory (its local history).

Also client side, though the simulator computes it centrally: evaluation (each
user scores its candidates with its own private params and memory) and the
round planner (negative sampling from the user's own positives).

:func:`check_no_private` fails (:class:`PrivacyLeakError`) if a server-side
leaf is a private model leaf (same path inside ``ModelParams.private``, e.g.
user embeddings, PFedRec/FedRAP score heads, FedRAP's personal item table,
local evaluation scores), is a model-like leaf the shared half does not have, or is
named like private data (``user``, ``personal``, ``history``, ``private``,
``eval_scores``).

Why it lives in ``federated/``: the audit is not a privacy primitive on
pytrees; it traces the round's own functions (client function, chunk step,
server step and the secure round's masked upload), so it sits beside them and
``privacy/`` stays free of imports from ``federated/`` (one-way layering).
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from feddmr_jax.errors import FeddmrError
from feddmr_jax.federated.secure_round import masked_uploads

SERVER_ROLES = ("upload", "server_round", "server_state")
CLIENT_ROLES = ("client_store", "client_data")
PRIVATE_WORDS = ("user", "personal", "history", "private", "eval_scores")

# What a server-side leaf that is not a model parameter tells the server.
REVEALS = {
    "upload.rows": "global ids of the client's local table rows: with row_mask, the items it "
                   "trained on (its positives, sampled negatives and memory)",
    "upload.row_mask": "which of those rows the client used",
    "upload.num_examples": "the client's example count: positives x (1 + negatives)",
    "upload.loss": "the client's mean training loss (simulator diagnostic)",
    "upload.masked.row_weight": "masked: the client's row-use indicator (only the round's "
                                "sum is revealed)",
    "upload.masked.weight": "masked: the client's weight (only the round's sum is revealed)",
    "upload.masked.overflow": "masked: 1 if the client's upload had to saturate (only the "
                              "round's count is revealed)",
    "server_round.acc.row_weight": "per item row, total weight of the participants that used it",
    "server_round.acc.weight": "total weight of the accepted participants",
    "server_round.acc.masks": "masking graph: who was sampled, who is absent, the masked "
                              "saturation count; the keys are a simulation stand-in for the "
                              "clients' key agreement and self-mask seeds",
}


class AuditEntry(NamedTuple):
    """One leaf of a round and who holds it.

    Attributes:
      role: one of :data:`SERVER_ROLES` or :data:`CLIENT_ROLES`.
      path: container and pytree path, e.g. ``upload.delta.tables['items']``.
      shape: the leaf's shape (per client for ``upload``; with the chunk's
        client axis for ``client_data``; ``[U, ...]`` for ``client_store``).
      dtype: the leaf's dtype name.
    """

    role: str
    path: str
    shape: tuple[int, ...]
    dtype: str


class PrivacyLeakError(FeddmrError):
    """A private leaf is among what the server receives or stores."""


def _entries(role: str, name: str, tree: Any) -> list[AuditEntry]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [AuditEntry(role, name + jax.tree_util.keystr(path), tuple(x.shape), str(x.dtype))
            for path, x in leaves]


def _first(stacked: Any) -> Any:
    return jax.eval_shape(lambda t: jax.tree.map(lambda x: x[0], t), stacked)


def audit_round(algorithm: Any, chunk: Any, *, masks: Any = None) -> list[AuditEntry]:
    """Every leaf a round touches, by role (see module docstring).

    Args:
      algorithm: a :class:`~feddmr_jax.federated.algorithm.FederatedAlgorithm`
        built in vectorized (not sequential) mode.
      chunk: one :class:`~feddmr_jax.federated.parallel.ChunkData` of the
        run (e.g. from ``plan_round``; only shapes are used).
      masks: the round's :class:`~feddmr_jax.privacy.secure_agg.MaskGraph` under secure
        aggregation, else None.

    Returns:
      The entries, server roles first.
    """
    parts = algorithm.parts
    key = jax.random.key(0)
    state = jax.eval_shape(algorithm.init, key)
    row = _first(chunk)
    private_one = _first(state.private_store)

    def upload_of(shared, private, one_row, k):
        out = parts.client_fn(shared, private, one_row, k)
        if masks is None:
            return out._replace(private=None)
        stack = lambda x: x[None]  # noqa: E731
        up = masked_uploads(jax.tree.map(stack, out.delta), out.num_examples[None],
                            one_row.client_ids[None], jnp.ones((1,), bool), out.rows[None],
                            out.row_mask[None], masks, _num_items(state.shared))
        return {"masked": jax.tree.map(lambda x: x[0], up), "loss": out.loss}

    upload = jax.eval_shape(upload_of, state.shared, private_one, row, key)
    acc0 = jax.eval_shape(parts.init_round, state.shared, masks)
    store, acc, loss_sum = jax.eval_shape(algorithm.chunk_step, state.shared,
                                          state.private_store, acc0, chunk, key)
    plain_acc = acc._replace(masks=None)
    shared, opt_state = jax.eval_shape(parts.server_step, state.shared,
                                       state.server_opt_state, plain_acc, key)
    if isinstance(upload, dict):
        upload_entries = (_entries("upload", "upload.masked", upload["masked"])
                          + _entries("upload", "upload.loss", upload["loss"]))
    else:
        upload_entries = _entries("upload", "upload", upload)
    return (upload_entries
            + _entries("server_round", "server_round.acc", acc)
            + _entries("server_round", "server_round.loss_sum", loss_sum)
            + _entries("server_state", "server_state.shared", shared)
            + _entries("server_state", "server_state.opt_state", opt_state)
            + _entries("client_store", "client_store", store)
            + _entries("client_data", "client_data", chunk))


def _num_items(shared: Any) -> int:
    tables = list(shared.tables.values())
    return tables[0].shape[0] if tables else 0


def model_path(path: str) -> str | None:
    """The part of an entry path inside a model half (``.tables[...]``/``.dense[...]``)."""
    match = re.search(r"\.(tables|dense)\[", path)
    return path[match.start():] if match else None


def model_leaf_paths(algorithm: Any) -> tuple[set[str], set[str]]:
    """``(private paths, shared paths)`` inside a model half, e.g. ``.dense['user']``.

    Private paths come from the private store (so evaluation views count as
    private), shared ones from the global shared params.
    """
    state = jax.eval_shape(algorithm.init, jax.random.key(0))
    private = {jax.tree_util.keystr(p) for p, _ in
               jax.tree_util.tree_flatten_with_path(state.private_store)[0]}
    shared = {jax.tree_util.keystr(p) for p, _ in
              jax.tree_util.tree_flatten_with_path(state.shared)[0]}
    return private, shared


def find_leaks(entries: list[AuditEntry], private_paths: set[str],
               shared_paths: set[str]) -> list[tuple[AuditEntry, str]]:
    """Server-side entries that are (or look like) private data, with the reason.

    Args:
      entries: from :func:`audit_round`.
      private_paths, shared_paths: from :func:`model_leaf_paths`.

    Returns:
      ``[(entry, reason)]``; empty when nothing private reaches the server.

    Raises:
      ValueError: a path exists in both model halves (the audit cannot tell
        them apart).
    """
    both = private_paths & shared_paths
    if both:
        raise ValueError(f"paths in both the private and the shared half: {sorted(both)}; "
                         "rename one so the audit can tell them apart")
    leaks = []
    for e in entries:
        if e.role not in SERVER_ROLES:
            continue
        inner = model_path(e.path)
        words = re.findall(r"[a-z]+", e.path.lower())
        if inner is not None and inner in private_paths:
            leaks.append((e, f"private model leaf {inner}"))
        elif inner is not None and inner not in shared_paths:
            leaks.append((e, f"{inner} is not a leaf of the shared half"))
        elif any(w in PRIVATE_WORDS for w in words):
            leaks.append((e, "named like private data"))
    return leaks


def check_no_private(algorithm: Any, chunk: Any, *, masks: Any = None) -> list[AuditEntry]:
    """Audits a round and fails loudly if anything private reaches the server.

    Args:
      algorithm, chunk, masks: as for :func:`audit_round`.

    Returns:
      The server-side entries (for reports).

    Raises:
      PrivacyLeakError: listing every offending leaf.
    """
    entries = audit_round(algorithm, chunk, masks=masks)
    leaks = find_leaks(entries, *model_leaf_paths(algorithm))
    if leaks:
        lines = "\n".join(f"  {e.role}: {e.path} {e.shape}: {why}" for e, why in leaks)
        raise PrivacyLeakError(f"{len(leaks)} private leaf(s) reach the server:\n{lines}")
    return [e for e in entries if e.role in SERVER_ROLES]


def format_audit(entries: list[AuditEntry]) -> str:
    """A markdown table of entries (role, path, shape, dtype, what it reveals)."""
    rows = ["| role | leaf | shape | dtype | note |", "|---|---|---|---|---|"]
    for e in entries:
        note = next((v for k, v in REVEALS.items() if e.path.startswith(k)), "")
        shape = "x".join(map(str, e.shape)) or "scalar"
        rows.append(f"| {e.role} | `{e.path}` | {shape} | {e.dtype} | {note} |")
    return "\n".join(rows)


def upload_floats(entries: list[AuditEntry]) -> int:
    """Number of values one client uploads per round (``upload`` entries)."""
    return sum(math.prod(e.shape) for e in entries if e.role == "upload")
