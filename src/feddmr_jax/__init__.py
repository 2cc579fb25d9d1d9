"""feddmr_jax: FedDMR and FedRec baselines in a vectorized JAX engine."""

__version__ = "0.1.0"
