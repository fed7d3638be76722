"""`experiment`: four arms per seed as real, replayable runs, and a report that says what they show."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from engine.config import quick_config
from engine.experiment import ArmRun, real_gain, run_experiment
from engine.telemetry import read_events

pytestmark = pytest.mark.slow


def test_experiment_runs_every_arm_and_writes_a_report(tmp_path):
    out = io.StringIO()
    path = run_experiment(quick_config(), [0], tmp_path, stream=out, command="esper-tui experiment --preset quick")
    report = path.read_text()
    printed = out.getvalue()
    assert "[####################] 4/4" in printed  # progress as it goes
    for arm in ("host alone (the seedless twin)", "grown by the autopilot", "2x width"):
        assert arm in report
    assert "Command: `esper-tui experiment --preset quick`" in report
    assert "## Calibration" in report and "## Journeys" in report
    assert "Grown minus its seedless twin" in report
    configs = {}
    for arm in ("host", "grown", "wide"):
        log = read_events(tmp_path / "seed0" / arm / "events.jsonl", strict=True)
        assert log.events[0].kind == "run_started" and log.events[-1].kind == "run_finished"
        configs[arm] = log.events[0].config
    assert configs["host"]["autopilot"] is False and configs["grown"]["autopilot"] is True
    assert configs["grown"]["credit"]["compare"] is True  # every estimator logged, for the calibration table
    assert configs["wide"]["host"] == {"width": 4}  # digits' host is width 2
    fossils = {e.slot: e.blueprint for e in read_events(tmp_path / "seed0" / "grown" / "events.jsonl").events
               if e.kind == "stage_changed" and str(e.to_stage) == "FOSSILIZED"}
    if fossils:
        fixed = read_events(tmp_path / "seed0" / "fixed" / "events.jsonl").events[0].config
        assert fixed["fossils"] == fossils and fixed["autopilot"] is False
    else:
        assert "= host (nothing fossilized)" in printed


def test_real_gain_is_the_mean_difference_over_the_three_epochs_ending_at_the_decision(tmp_path):
    grown = ArmRun("grown", 0, tmp_path, val_acc=[90.0, 91.0, 92.0, 95.0, 96.0])
    twin = ArmRun("host", 0, tmp_path, val_acc=[90.0, 91.0, 91.0, 92.0, 92.0])
    assert real_gain(grown, twin, 5) == pytest.approx((1 + 3 + 4) / 3)
    assert real_gain(grown, twin, 1) == pytest.approx(0.0)


@pytest.mark.parametrize("args", [["--seeds", "a,b"], ["--arms", "host,bogus"], ["--task", "bogus"]])
def test_bad_experiment_options_exit_2_with_a_message(tmp_path, args):
    proc = subprocess.run([sys.executable, "-m", "engine", "experiment", "--out", str(tmp_path / "x"), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]  # argparse's own refusals come after its usage lines
    assert "error:" in last and ("bogus" in last or "a,b" in last)
    assert not (tmp_path / "x").exists()


def test_esper_tui_experiment_help_names_the_arms():
    proc = subprocess.run([sys.executable, "-m", "esper_tui", "experiment", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0
    assert "esper-tui experiment" in proc.stdout and "--seeds" in proc.stdout and "--arms" in proc.stdout


def test_a_failed_arm_is_said_to_have_failed(tmp_path):
    out = io.StringIO()
    cfg = quick_config(epochs=3).model_copy(update={"faults": quick_config().faults.model_copy(update={"crash_at_epoch": 2})})
    path = run_experiment(cfg, [0], tmp_path, arms=("host",), stream=out)
    assert "FAILED (exit 1" in out.getvalue()
    assert "(1 run(s) FAILED)" in path.read_text()
