"""Run control (engine.run_control): pause, step one epoch, stop, in the log's words (issue 10).

No torch and no trainer: a RunControl with its events caught in a list, a real control socket where
the order of commands matters.
"""

from __future__ import annotations

import pytest

from engine.commands import AdvanceCommand, PauseCommand, ResumeCommand, StepEpochCommand, StopCommand
from engine.control import CommandServer, ControlClient
from engine.run_control import RunControl, StopRun
from engine.telemetry.sink import Emitter, ListSink


class Rig:
    def __init__(self) -> None:
        self.sink = ListSink()
        self.emitter = Emitter(self.sink)
        self.applied: list[str] = []
        self.flushes = 0
        self.control = RunControl(self.emitter.emit, self._flush, self._apply)

    def _flush(self) -> None:
        self.flushes += 1

    def _apply(self, cmd) -> None:  # the trainer's part: run commands come back to `execute`
        outcome = self.control.execute(cmd, epoch=3, in_epoch=True)
        self.applied.append(cmd.command if outcome is None else f"{cmd.command}:{outcome.applied}")

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, e.cause) for e in self.sink.events]


def test_pause_resume_and_their_refusals():
    rig = Rig()
    c = rig.control
    assert c.execute(ResumeCommand(), 3, True).reason == "the run is not paused"
    assert c.execute(StepEpochCommand(), 3, True).reason == "step_epoch works while paused; pause first"
    assert c.execute(PauseCommand(), 3, True).applied and c.paused
    assert rig.flushes == 1  # the log is on disk before the run waits
    assert c.execute(PauseCommand(), 3, True).reason == "the run is already paused"
    assert c.execute(ResumeCommand(), 3, True).applied and not c.paused
    assert rig.kinds() == [("run_paused", "operator"), ("run_resumed", "operator")]
    assert c.execute(AdvanceCommand(slot="block1"), 3, True) is None  # not a run command: the trainer's


@pytest.mark.parametrize(("in_epoch", "pauses_after"), [(True, 3), (False, 4)])
def test_step_epoch_runs_exactly_one_epoch_then_pauses(in_epoch, pauses_after):
    rig = Rig()
    c = rig.control
    c.execute(PauseCommand(), 3, in_epoch)
    assert c.execute(StepEpochCommand(), 3, in_epoch).applied and not c.paused
    if pauses_after == 4:
        c.epoch_ended(3, started=0.0)  # paused between epochs: the next one is the step, not this one
        assert not c.paused
    c.epoch_ended(pauses_after, started=0.0)
    assert c.paused and rig.kinds()[-1] == ("run_paused", "step_epoch")


def test_stop_ends_the_run_at_the_next_safe_point():
    c = Rig().control
    c.safe_point()  # nothing asked: goes on
    c.stop("SIGTERM")
    with pytest.raises(StopRun):
        c.safe_point()
    assert c.stop_cause == "SIGTERM"


def test_commands_are_applied_in_the_order_they_came(tmp_path):
    rig = Rig()
    with CommandServer(tmp_path) as server, ControlClient(tmp_path) as client:
        rig.control.server = server
        for cmd in (PauseCommand(), AdvanceCommand(slot="block1"), StopCommand()):
            assert client.send(cmd)["ok"]
        assert server.wait_for_command(5.0)
        with pytest.raises(StopRun):  # paused, yet the stop queued behind the pause ends the wait
            rig.control.safe_point()
    assert rig.applied == ["pause:True", "advance", "stop:True"]
