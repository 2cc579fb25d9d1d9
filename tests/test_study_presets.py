"""experiments/study_presets.py: a study's choices become TOML presets that ``feddmr train
--config`` reads back as the chosen settings on the method's reference values."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from feddmr_jax import config as config_lib

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import study_presets  # noqa: E402


def _study(folder: Path, dataset: str, chosen: dict) -> Path:
    folder.mkdir(parents=True)
    (folder / "study_runs.csv").write_text(f"dataset,method\n{dataset},fedncf\n")
    (folder / "study_chosen.json").write_text(json.dumps(chosen))
    return folder


def test_presets_round_trip_through_the_config_loader(tmp_path):
    mean = {"val_hr@10": 0.6, "val_auc": 0.85}
    study = _study(tmp_path / "study", "lastfm-2k", {
        "fedncf": {"point_id": "p1", "settings": {"train.embedding_lr": 0.2, "train.mu": 1e-06,
                                                  "train.server_optimizer": "adam",
                                                  "train.server_lr": 0.01},
                   "validation_mean": mean, "seeds": [0, 1, 2], "rounds": 150},
        "feddmr": {"point_id": "reference", "settings": {"model.attention": True,
                                                         "model.history_len": 10},
                   "validation_mean": mean, "seeds": [0], "rounds": 100},
        "fedrap": {"skipped": "too large"},
        "popularity": {"point_id": "reference", "settings": {}, "rounds": 1},
        "feddmr_1layer": {"point_id": "reference", "settings": {"model.layers": 1},
                          "rounds": 100}})
    configs = tmp_path / "configs"
    assert study_presets.main([str(study), "--configs", str(configs)]) == 0
    assert sorted(p.name for p in (configs / "lastfm-2k").iterdir()) == ["feddmr.toml",
                                                                         "fedncf.toml"]
    cfg = config_lib.load_config_file(configs / "lastfm-2k" / "fedncf.toml")
    assert (cfg.data.dataset, cfg.train.model, cfg.train.rounds) == ("lastfm-2k", "fedncf", 150)
    assert (cfg.train.embedding_lr, cfg.train.mu) == (0.2, 1e-06)
    assert (cfg.train.server_optimizer, cfg.train.server_lr) == ("adam", 0.01)
    assert cfg.train.batch_size == 256                  # fedncf's reference value, untouched
    cfg = config_lib.load_config_file(configs / "lastfm-2k" / "feddmr.toml")
    assert cfg.model.attention is True and cfg.model.history_len == 10
    text = (configs / "lastfm-2k" / "fedncf.toml").read_text()
    assert "mean validation HR@10 0.6000" in text and "seeds 0, 1, 2" in text


def test_without_a_study_it_is_a_one_line_error(tmp_path, capsys):
    assert study_presets.main([str(tmp_path)]) == 2
    assert "study_runs.csv: not found" in capsys.readouterr().err
