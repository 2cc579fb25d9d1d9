"""Typed, frozen run configuration; TOML files and CLI flags map onto it.

A config file has one table per section::

    [data]
    dataset = "ml-100k"
    data_dir = "../shared/data"

    [model]
    dim = 32
    heads = 4

    [train]
    model = "feddmr"
    rounds = 100
    mu = 0.01

Flags given on the command line override the file. Unknown sections or keys,
and values of the wrong type, are errors that name the key.

The ``[model]`` section is typed by ``train.model``: each model has its own
config dataclass (``feddmr_jax.method_configs.MODEL_CONFIGS``), and a key that model
does not have is an error naming the key and the model. A config built from
a file or the command line (:func:`build_config`) starts from the chosen
method's reference ``[train]`` values (``method_configs.SPECS``) for the keys it
does not set. ``config.json`` records ``train.model`` with every value, so
:func:`from_dict` rebuilds the same config.

The dataclasses are in ``config_sections.py``, their validation in
``config_checks.py`` and the parsing (files, flags, keywords, dicts) in
``config_io.py``; this module is their public face and re-exports them. None
of them loads JAX (``feddmr --help`` imports no jax).
"""

from __future__ import annotations

from feddmr_jax.config_checks import (EVAL_METRICS, EVAL_MODE_CHOICES,  # noqa: F401
                                      LR_SCHEDULES, PROX_SCOPES, SERVER_OPTIMIZERS,
                                      check_data, check_finite, check_privacy, check_run,
                                      check_server, check_train)
from feddmr_jax.config_io import (apply_overrides, build_config,  # noqa: F401
                                  create_config, did_you_mean, from_dict,
                                  load_config_file, read_config_file, to_dict, with_model)
from feddmr_jax.config_sections import (SECTIONS, DataConfig, RunConfig,  # noqa: F401
                                        TrainConfig)
from feddmr_jax.errors import ConfigError  # noqa: F401
from feddmr_jax.method_configs import (MODEL_CONFIGS, FedDMRConfig,  # noqa: F401
                                       ModelConfig, get_spec, model_config_class,
                                       model_name_of)
