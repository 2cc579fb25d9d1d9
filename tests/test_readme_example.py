"""The README's Python API example runs as written (in a scratch folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_api_example() -> str:
    section = README.read_text().split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python API section has one runnable example"
    return blocks[0]


def test_readme_python_example_trains_and_reads_the_metrics(tmp_path, monkeypatch, capsys):
    pytest.importorskip("pandas")
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_api_example(), "README.md (Python API)", "exec"), {})
    out = capsys.readouterr().out
    assert "best round" in out and "val_hr10" in out
    rounds = [int(line.split()[0]) for line in out.splitlines() if re.match(r"\s*\d+\s+0?\.", line)]
    assert rounds == [1, 2, 3, 4]
    assert (tmp_path / "runs" / "api-demo" / "checkpoints").is_dir()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "runs" / "api-demo" / "val_hr10.png").stat().st_size > 0
