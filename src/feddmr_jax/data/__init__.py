"""Data pipeline: raw files -> interactions -> split -> negatives -> packed arrays.

Steps, each its own module:
``datasets.load_dataset`` (with ``formats``, ``readers``, ``tidy``, ``fetch``,
``synthetic``) -> ``splits.split_interactions`` -> ``negatives`` (evaluation) and
``train_negatives`` -> ``packing`` (padded arrays with masks); ``stats`` sums up.
"""

from feddmr_jax.data.datasets import LOADERS, load_dataset
from feddmr_jax.data.fetch import REMOTES, Remote, fetch_dataset
from feddmr_jax.data.negatives import build_eval_sets, sample_eval_negatives
from feddmr_jax.data.train_negatives import (draw_train_negatives, sample_train_negatives,
                                             train_exclusions)
from feddmr_jax.data.packing import bucket_clients, pad_ragged, recent_history
from feddmr_jax.data.splits import positives_csr, split_interactions, train_csr
from feddmr_jax.data.stats import dataset_stats
from feddmr_jax.data.synthetic import generate_synthetic
from feddmr_jax.data.types import EvalSet, Interactions, Split, TrainCSR

__all__ = [
    "EvalSet", "Interactions", "LOADERS", "REMOTES", "Remote", "Split", "TrainCSR",
    "bucket_clients", "build_eval_sets", "dataset_stats", "draw_train_negatives", "fetch_dataset", "generate_synthetic",
    "load_dataset", "pad_ragged", "positives_csr", "recent_history", "sample_eval_negatives",
    "sample_train_negatives", "split_interactions", "train_csr", "train_exclusions",
]
