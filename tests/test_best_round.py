"""Model selection on validation: ties go to the later round (PFedRec's `>=`)."""

from feddmr_jax.train import is_new_best


def test_ties_keep_the_latest_round():
    history = [(1, 0.40), (2, 0.50), (3, 0.50), (4, 0.45), (5, 0.50)]
    best_round, best = None, None
    for r, hr in history:
        val = {"hr@10": hr}
        if is_new_best(val, best, "hr@10"):
            best_round, best = r, val
    assert best_round == 5                      # rounds 2, 3 and 5 tie: the latest wins
    assert not is_new_best({"hr@10": 0.49}, {"hr@10": 0.5}, "hr@10")
    assert is_new_best({"hr@10": 0.0}, None, "hr@10")
