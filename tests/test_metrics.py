"""Ranking metrics against hand-computed values and independent references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from feddmr_jax.metrics import mean_metrics, pessimistic_ranks, ranking_metrics

K = 10
# Tests call the jitted function: one compilation per shape instead of one per op.
jit_metrics = jax.jit(ranking_metrics, static_argnames="k")
NAMES = (f"hr@{K}", f"ndcg@{K}", f"precision@{K}", f"recall@{K}", "mrr")


def reference_row(scores, labels, mask, k):
    """Brute-force pure-Python metrics of one user (pessimistic ties)."""
    real = [c for c in range(len(scores)) if mask[c]]
    pos = [c for c in real if labels[c]]
    if not pos:
        return None
    rank = {
        c: 1
        + sum(scores[o] > scores[c] for o in real)
        + sum(scores[o] == scores[c] for o in real if o != c)
        for c in pos
    }
    hits = [c for c in pos if rank[c] <= k]
    dcg = sum(1.0 / math.log2(rank[c] + 1) for c in hits)
    idcg = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(pos), k) + 1))
    return {
        f"hr@{k}": float(bool(hits)),
        f"ndcg@{k}": dcg / idcg,
        f"precision@{k}": len(hits) / k,
        f"recall@{k}": len(hits) / len(pos),
        "mrr": 1.0 / min(rank.values()),
    }


def random_case(seed, users, candidates, pos_rate, levels, pad_rate=0.0):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (users, candidates)).astype(np.float32)
    labels = rng.random((users, candidates)) < pos_rate
    mask = rng.random((users, candidates)) >= pad_rate
    return scores, labels, mask


def check_against_references(scores, labels, mask, k=K):
    out = jit_metrics(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(mask), k=k)
    out = {name: np.asarray(value) for name, value in out.items()}
    finite = np.nan_to_num(scores)  # sklearn rejects inf; order and ties are kept
    for u in range(scores.shape[0]):
        ref = reference_row(scores[u], labels[u], mask[u], k)
        assert bool(out["valid"][u]) == (ref is not None)
        if ref is not None:
            for name, value in ref.items():
                np.testing.assert_allclose(float(out[name][u]), value, atol=1e-6, err_msg=name)
        real = mask[u]
        y = labels[u][real]
        has_both = y.any() and (~y).any()
        assert bool(out["auc_valid"][u]) == has_both
        if has_both:
            expected = roc_auc_score(y, finite[u][real])
            np.testing.assert_allclose(float(out["auc"][u]), expected, atol=1e-6)
    return out


def test_positive_ranked_first():
    scores = np.arange(100, dtype=np.float32)[None, ::-1].copy()  # candidate 0 best
    labels = np.zeros((1, 100), bool)
    labels[0, 0] = True
    out = jit_metrics(scores, labels, k=K)
    for name in (f"hr@{K}", f"ndcg@{K}", f"recall@{K}", "mrr", "auc"):
        assert float(out[name][0]) == pytest.approx(1.0)
    assert float(out[f"precision@{K}"][0]) == pytest.approx(0.1)


def test_positive_at_rank_three():
    scores = np.array([[5.0, 9.0, 8.0, 1.0, 0.0]], np.float32)
    labels = np.array([[True, False, False, False, False]])
    out = jit_metrics(scores, labels, k=3)
    assert float(out["hr@3"][0]) == 1.0
    assert float(out["ndcg@3"][0]) == pytest.approx(0.5)  # 1 / log2(4)
    assert float(out["mrr"][0]) == pytest.approx(1 / 3)
    assert float(out["auc"][0]) == pytest.approx(0.5)  # beats 2 of 4 negatives
    assert float(jit_metrics(scores, labels, k=2)["hr@2"][0]) == 0.0


def test_tie_with_all_negatives_is_pessimistic():
    scores = np.zeros((1, 100), np.float32)
    labels = np.zeros((1, 100), bool)
    labels[0, 0] = True
    out = jit_metrics(scores, labels, k=K)
    assert float(out[f"hr@{K}"][0]) == 0.0
    assert float(out[f"ndcg@{K}"][0]) == 0.0
    assert float(out["mrr"][0]) == pytest.approx(1 / 100)
    assert float(out["auc"][0]) == pytest.approx(0.5)
    assert int(pessimistic_ranks(scores)[0, 0]) == 100


def test_negative_zero_ties_with_zero():
    scores = np.array([[0.0, -0.0, -1.0]], np.float32)
    labels = np.array([[True, False, False]])
    out = jit_metrics(scores, labels, k=1)
    assert float(out["hr@1"][0]) == 0.0
    assert float(out["auc"][0]) == pytest.approx(0.75)


def test_sampled_protocol_matches_references():
    scores, _, _ = random_case(0, 64, 100, 0.0, levels=20)
    labels = np.zeros_like(scores, bool)
    labels[:, 0] = True
    check_against_references(scores, labels, np.ones_like(labels))


def test_several_positives_with_ties_match_references():
    scores, labels, mask = random_case(1, 80, 60, 0.15, levels=8)
    out = check_against_references(scores, labels, mask)
    assert int(jnp.sum(out["valid"])) > 70


def test_continuous_scores_match_references():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=(40, 50)).astype(np.float32)
    labels = rng.random((40, 50)) < 0.1
    check_against_references(scores, labels, np.ones_like(labels), k=5)


def test_padding_with_huge_scores_changes_nothing():
    scores, labels, mask = random_case(3, 30, 40, 0.2, levels=6, pad_rate=0.3)
    base = check_against_references(scores, labels, mask)
    # Scores and labels at padded entries are garbage: huge, infinite, positive.
    rng = np.random.default_rng(4)
    junk = rng.choice(np.array([1e30, np.inf, -np.inf, 7.0], np.float32), scores.shape)
    scores2 = np.where(mask, scores, junk)
    labels2 = np.where(mask, labels, True)
    out = jit_metrics(scores2, labels2, mask, k=K)
    # Append whole padding columns too.
    pad = np.full((30, 17), 1e30, np.float32)
    out3 = jit_metrics(
        np.concatenate([scores, pad], 1),
        np.concatenate([labels, np.ones_like(pad, bool)], 1),
        np.concatenate([mask, np.zeros_like(pad, bool)], 1),
        k=K,
    )
    for name in base:
        np.testing.assert_array_equal(np.asarray(out[name]), np.asarray(base[name]))
        np.testing.assert_array_equal(np.asarray(out3[name]), np.asarray(base[name]))


def test_non_finite_scores_count_against_the_user():
    """A NaN or infinite positive is never a hit (it ranks last); a NaN or
    infinite negative ranks first; the other users' metrics are unchanged."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(4, 12)).astype(np.float32)
    labels = np.zeros((4, 12), bool)
    labels[:, 0] = True
    scores[:, 0] = 5.0                                  # every positive is the top score
    base = {n: np.asarray(v) for n, v in jit_metrics(scores, labels, k=K).items()}
    assert base[f"hr@{K}"].tolist() == [1.0] * 4 and base["finite"].all()
    bad = scores.copy()
    bad[1, 0] = np.nan                                  # NaN positive
    bad[2, 0] = np.inf                                  # infinite positive
    bad[3, 5] = np.nan                                  # NaN negative
    out = {n: np.asarray(v) for n, v in jit_metrics(bad, labels, k=K).items()}
    for u in (1, 2):
        assert out[f"hr@{K}"][u] == 0 and out[f"ndcg@{K}"][u] == 0 and out["auc"][u] == 0
        assert out["mrr"][u] == pytest.approx(1 / 12)
    assert out["auc"][3] == pytest.approx(10 / 11)      # one negative now ranks above
    assert out["mrr"][3] == pytest.approx(1 / 2)
    assert out["finite"].tolist() == [True, False, False, False]
    for name in NAMES:
        assert out[name][0] == base[name][0]
    # Padding may hold anything: a NaN there changes nothing.
    mask = np.ones((4, 12), bool)
    mask[0, 7] = False
    padded = scores.copy()
    padded[0, 7] = np.nan
    pad = {n: np.asarray(v) for n, v in jit_metrics(padded, labels, mask, k=K).items()}
    assert pad["finite"][0] and pad[f"hr@{K}"][0] == 1.0


def test_evaluation_refuses_non_finite_scores():
    from feddmr_jax.errors import FeddmrError
    from feddmr_jax.train import build_experiment, evaluate_state

    from engine_helpers import tiny_config

    exp = build_experiment(tiny_config())
    state = exp.algorithm.init(exp.keys["init"])
    evaluate_state(exp, state, exp.val_set)            # finite: fine
    items = state.shared.tables["items"].at[:].set(jnp.nan)
    broken = state._replace(shared=state.shared._replace(
        tables={**state.shared.tables, "items": items}))
    with pytest.raises(FeddmrError, match=r"evaluation: 24 of 24 users have non-finite"):
        evaluate_state(exp, broken, exp.val_set)


def test_invalid_users_and_mean_metrics():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]], np.float32)
    labels = np.array([[True, False, False], [False, False, False], [True, True, True]])
    out = jit_metrics(scores, labels, k=1)
    np.testing.assert_array_equal(np.asarray(out["valid"]), [True, False, True])
    np.testing.assert_array_equal(np.asarray(out["auc_valid"]), [True, False, False])
    means = mean_metrics(out)
    assert "valid" not in means and "auc_valid" not in means
    assert means["auc"] == pytest.approx(1.0)  # only user 0 counts for auc
    # user 2: three tied positives, all rank 3 -> no hit at k=1, mrr 1/3.
    assert means["hr@1"] == pytest.approx(0.5)
    assert means["mrr"] == pytest.approx((1.0 + 1 / 3) / 2)
    only_first = mean_metrics(out, out["valid"] & np.array([True, False, False]))
    assert only_first["mrr"] == pytest.approx(1.0)
    assert math.isnan(mean_metrics(out, np.zeros(3, bool))["mrr"])


def test_full_ranking_shape_and_jit():
    users, items = 943, 1682  # ml-100k full ranking
    rng = np.random.default_rng(5)
    scores = rng.normal(size=(users, items)).astype(np.float32)
    labels = rng.random((users, items)) < 0.01
    mask = rng.random((users, items)) < 0.95
    out = {n: np.asarray(v) for n, v in jit_metrics(scores, labels, mask, k=K).items()}
    for name in out:
        assert out[name].shape == (users,)
    for u in range(0, users, 97):  # spot-check against the references
        real = mask[u]
        y = labels[u][real]
        if y.any() and (~y).any():
            np.testing.assert_allclose(
                float(out["auc"][u]), roc_auc_score(y, scores[u][real]), atol=1e-6
            )
        ref = reference_row(scores[u], labels[u], mask[u], K)
        if ref is not None:
            for name in NAMES:
                np.testing.assert_allclose(float(out[name][u]), ref[name], atol=1e-6)


def test_jit_without_mask_and_bad_k():
    """No mask means every candidate is real: jitted values equal the brute-force ones."""
    scores, labels, _ = random_case(6, 5, 12, 0.3, levels=4)
    out = jax.jit(ranking_metrics, static_argnames="k")(scores, labels, k=3)
    everything = np.ones(scores.shape[1], bool)
    checked = 0
    for u in range(scores.shape[0]):
        ref = reference_row(scores[u], labels[u], everything, 3)
        if ref is not None:
            checked += 1
            for name, value in ref.items():
                np.testing.assert_allclose(float(out[name][u]), value, atol=1e-6, err_msg=name)
    assert checked >= 3
    with pytest.raises(ValueError):
        ranking_metrics(scores, labels, k=0)
