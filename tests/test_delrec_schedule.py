"""DELRec's schedules are sized to the run: AdaLoRA's budget schedule and the DWA window."""

from __future__ import annotations

import pytest

from rdrec.methods.delrec.module import adalora_schedule
from rdrec.methods.delrec.stage1 import DynamicWeightAverage, dwa_window_steps


def test_adalora_schedule_fractions_become_steps_of_the_run():
    options = {"init_r": 12, "tinit": 0.1, "tfinal": 0.2, "deltaT": 0.05, "total_step": None}
    assert adalora_schedule(options, 236) == {"init_r": 12, "tinit": 24, "tfinal": 47, "deltaT": 12, "total_step": 236}
    # whole numbers are steps; a fixed total_step wins over the run's
    assert adalora_schedule({"tinit": 5, "tfinal": 7, "deltaT": 3, "total_step": 100}, 236) == {
        "tinit": 5, "tfinal": 7, "deltaT": 3, "total_step": 100}


def test_adalora_schedule_stays_valid_for_short_runs():
    # peft refuses tinit >= total_step - tfinal; deltaT is at least one step
    out = adalora_schedule({"tinit": 0.5, "tfinal": 0.6, "deltaT": 0.01}, 3)
    assert out["tinit"] + out["tfinal"] < out["total_step"] == 3 and out["deltaT"] == 1
    assert adalora_schedule({"tinit": 0.1, "tfinal": 0.2, "deltaT": 0.05}, 1) == {
        "tinit": 0, "tfinal": 0, "deltaT": 1, "total_step": 1}
    with pytest.raises(ValueError, match="at least one training step"):
        adalora_schedule({"total_step": 0}, 0)


def test_dwa_window_is_a_fraction_of_the_run_and_reweights_within_it():
    assert dwa_window_steps(0.1, 30) == 3 and dwa_window_steps(0.1, 4) == 1 and dwa_window_steps(50, 30) == 50
    dwa = DynamicWeightAverage(("ta", "rps"), temperature=2.0, window=dwa_window_steps(0.1, 30))
    for step in range(6):  # ta's loss halves each window, rps's stays: rps gets more weight after two windows
        dwa.update({"ta": 2.0 / 2 ** (step // 3), "rps": 1.0})
    w = dwa.weights()
    assert w["rps"] > 1.0 > w["ta"] and w["ta"] + w["rps"] == pytest.approx(2.0)
