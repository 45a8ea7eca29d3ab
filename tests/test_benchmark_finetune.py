"""Smoke run of benchmarks.finetune on a tiny volume: it runs end to end and writes the
steps-to-previous-Dice of each run and their ratios (no timing or Dice asserted)."""

from __future__ import annotations

import json

import pytest
from benchmarks import finetune


@pytest.mark.slow
def test_finetune_smoke(tmp_path, capsys):
    out = tmp_path / "finetune.json"
    assert finetune.main(["--smoke", "--no-full-lr", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["smoke"] is True
    assert set(data["runs"]) == {"finetune", "scratch"}
    assert data["runs"]["finetune"]["finetune_lr_factor"] == pytest.approx(0.2)
    assert 0.0 <= data["previous_dice"] <= 1.0
    assert len(data["added"]) == 2
    for run in data["runs"].values():
        assert run["curve"]
        k = run["steps_to_target"]
        assert k is None or run["ratio_to_first_model"] == pytest.approx(k / 8)
    assert isinstance(data["met"], bool)
    assert "ratio to scratch" in capsys.readouterr().out
