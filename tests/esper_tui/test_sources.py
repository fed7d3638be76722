"""Run sources: following a live log, sending commands, watching the engine process, pacing a replay."""

from __future__ import annotations

import os
import signal
import stat
import time
from pathlib import Path

import pytest

from engine.control import CommandServer
from engine.telemetry import (
    Emitter,
    EpochCompleted,
    RunFailed,
    RunFinished,
    RunLogWriter,
    RunStarted,
    StepMetrics,
    last_seq,
    read_events,
)
from esper_tui.process import ERR_NAME, OUT_NAME, EngineProcess, engine_command, new_run_dir
from esper_tui.replay import ReplaySource
from esper_tui.sources import LiveSource, RunSource, SendResult
from esper_tui.state import RunState, apply, apply_all
from tests.esper_tui.static_source import StaticSource

pytestmark = pytest.mark.timeout(60)


def wait_until(pred, timeout=5.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout} s")


class Log:
    """A run log written by the test the way the engine writes it."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = RunLogWriter(run_dir / "events.jsonl")
        self.emitter = Emitter(self.writer)

    def started(self, epochs: int = 3):
        return self.emitter.emit(RunStarted, run_id="r1", config={}, task="digits", topology="cnn",
                                 slots=("s1",), isolation={}, device="cpu", planned_epochs=epochs)

    def epoch(self, n: int, steps: int = 1):
        self.emitter.epoch = n
        for _ in range(steps):
            self.emitter.step += 1
            self.emitter.emit(StepMetrics, loss=1.0 / n, lr=0.1)
        return self.emitter.emit(EpochCompleted, train_loss=1.0 / n, val_accuracy=50.0 + n)

    def flush(self):
        self.writer.flush()


class FakeProcess:
    def __init__(self, code=None, err=""):
        self.code, self.err = code, err

    def poll(self):
        return self.code

    def stderr_tail(self, n_chars=4000):
        return self.err[-n_chars:]


def drain_until(source, pred, timeout=10.0):
    """Drain into a list until `pred(list)` holds."""
    got = []

    def check():
        got.extend(source.drain())
        return pred(got)

    wait_until(check, timeout)
    return got


# --- LiveSource over a log the test writes ------------------------------------------------------------


def test_live_source_follows_a_growing_log_in_order(run_dir):
    log = Log(run_dir)
    log.started()
    log.epoch(1)
    log.flush()
    src = LiveSource(run_dir, poll_interval=0.02)
    assert src.drain() == []  # nothing before start, and no waiting
    src.start()
    try:
        got = drain_until(src, lambda g: len(g) == 3)  # history first
        assert [e.kind for e in got] == ["run_started", "step_metrics", "epoch_completed"]
        log.epoch(2)
        log.emitter.emit(RunFinished, status="completed")
        log.flush()
        got += drain_until(src, lambda g: g and g[-1].kind == "run_finished")
        seqs = [e.seq for e in got]
        assert seqs == sorted(seqs) == list(range(1, 7))
        assert src.finished and src.status_hint() is None and not src.can_command
        assert src.problems == []
    finally:
        src.stop()


def test_live_source_holds_back_a_partial_line(run_dir):
    log = Log(run_dir)
    log.started()
    log.flush()
    line = log.epoch(1).model_dump_json().encode()
    log.writer.close()
    path = run_dir / "events.jsonl"
    text = path.read_bytes()
    path.write_bytes(text[: -len(line) - 1] + line[:20])  # the epoch line cut off mid-write
    src = LiveSource(run_dir, poll_interval=0.02)
    src.start()
    try:
        got = drain_until(src, lambda g: len(g) >= 2)
        assert [e.kind for e in got] == ["run_started", "step_metrics"]
        time.sleep(0.2)
        assert src.drain() == []
        with open(path, "ab") as f:
            f.write(line[20:] + b"\n")
        rest = drain_until(src, lambda g: len(g) >= 1)
        assert [e.kind for e in rest] == ["epoch_completed"]
        assert src.problems == []
    finally:
        src.stop()


def test_live_source_caps_each_drain_and_never_blocks(run_dir):
    log = Log(run_dir)
    log.started()
    for n in range(1, 21):
        log.epoch(n, steps=4)
    log.flush()  # 1 + 20 * 5 = 101 events
    src = LiveSource(run_dir, poll_interval=0.02, max_drain=30)
    src.start()
    try:
        wait_until(lambda: src.caught_up and src.backlog == 101)
        sizes, got = [], []
        while batch := src.drain():
            sizes.append(len(batch))
            got += batch
        assert sizes == [30, 30, 30, 11]
        assert [e.seq for e in got] == list(range(1, 102))
        t0 = time.perf_counter()
        for _ in range(100):
            assert src.drain() == []
        assert time.perf_counter() - t0 < 0.05
    finally:
        src.stop()


def test_live_source_stops_quickly(run_dir):
    src = LiveSource(run_dir)  # no log yet: it waits for one
    src.start()
    time.sleep(0.15)
    t0 = time.monotonic()
    src.stop()
    assert time.monotonic() - t0 < 0.5
    assert src._thread is None


def test_live_source_reports_bad_lines(run_dir):
    log = Log(run_dir)
    log.started()
    log.writer.close()
    with open(run_dir / "events.jsonl", "ab") as f:
        f.write(b'{"kind": "nonsense"}\n')
    more = RunLogWriter(run_dir / "events.jsonl", append=True)
    Emitter(more, start_seq=1).emit(RunFinished, status="completed")
    more.close()
    src = LiveSource(run_dir, poll_interval=0.02)
    src.start()
    try:
        got = drain_until(src, lambda g: len(g) == 2)
        assert [e.kind for e in got] == ["run_started", "run_finished"]
        assert len(src.problems) == 1 and "line 2" in src.problems[0]
    finally:
        src.stop()


# --- commands -------------------------------------------------------------------------------------


def test_send_reaches_the_engine_socket_with_an_id(run_dir):
    with CommandServer(run_dir) as server:
        src = LiveSource(run_dir)
        try:
            assert src.can_command
            res = src.send("germinate", slot="s1", blueprint="conv_small")
            assert res.ok and res.error is None and res.command_id
            res2 = src.send("pause")
            assert res2.ok and res2.command_id != res.command_id
            cmds = wait_until(lambda: server.drain() or None)
            assert [(c.command, c.id) for c in cmds] == [("germinate", res.command_id), ("pause", res2.command_id)]
            assert cmds[0].blueprint == "conv_small"
            bad = src.send("germinate", slot="s1")  # refused before it is sent
            assert not bad.ok and "blueprint" in bad.error
            unknown = src.send("explode")
            assert not unknown.ok and "unknown command" in unknown.error
            assert server.drain() == []
        finally:
            src.stop()


def test_send_without_an_engine_is_an_answer_not_an_exception(run_dir):
    src = LiveSource(run_dir)
    res = src.send("pause")
    assert isinstance(res, SendResult) and not res.ok
    assert "no engine is listening" in res.error
    # A server that appears later is found: the client reconnects on the next send.
    with CommandServer(run_dir):
        assert src.send("resume").ok
    assert not src.send("resume").ok
    src.stop()


def test_send_with_a_run_dir_too_long_for_a_socket(run_dir):
    deep = run_dir / ("d" * 120)
    src = LiveSource(deep)
    assert not src.can_command
    res = src.send("pause")
    assert not res.ok and "shorter --run-dir" in res.error


# --- engine gone ------------------------------------------------------------------------------------


def test_attached_source_says_detached_when_nobody_answers(run_dir):
    log = Log(run_dir)
    log.started()
    log.flush()
    src = LiveSource(run_dir, poll_interval=0.02, probe_interval=0.05)
    with CommandServer(run_dir):
        src.start()
        time.sleep(0.3)
        assert src.status_hint() is None and src.can_command
    try:
        wait_until(lambda: src.status_hint() == "DETACHED")
        assert not src.can_command
        log.emitter.emit(RunFinished, status="completed")
        log.flush()
        wait_until(lambda: src.finished)
        assert src.status_hint() is None  # it ended properly: the log says FINISHED, no hint needed
    finally:
        src.stop()


def test_process_exit_without_a_final_event_is_a_crash(run_dir):
    log = Log(run_dir)
    log.started()
    log.flush()
    proc = FakeProcess()
    src = LiveSource(run_dir, proc, poll_interval=0.02, probe_interval=0.01)
    src.start()
    try:
        drain_until(src, lambda g: len(g) == 1)
        time.sleep(0.1)
        assert src.status_hint() is None and src.exit_code is None  # running; no socket probing
        proc.code, proc.err = -9, "Killed\n"
        wait_until(lambda: src.exit_code == -9)
        assert src.status_hint() == "CRASHED"
        assert src.stderr_tail() == "Killed\n"
        assert not src.can_command
    finally:
        src.stop()


def test_events_written_just_before_exit_are_read_before_judging(run_dir):
    proc = FakeProcess()
    src = LiveSource(run_dir, proc, poll_interval=0.02)
    src.start()
    try:
        time.sleep(0.1)
        log = Log(run_dir)
        log.started()
        log.emitter.emit(RunFailed, error_type="RuntimeError", message="boom")
        log.writer.close()
        proc.code = 1  # exits right after closing its log, maybe before the next poll saw it
        wait_until(lambda: src.exit_code == 1)
        assert src.finished and src.status_hint() is None  # the log's run_failed tells the story
        assert [e.kind for e in src.drain()] == ["run_started", "run_failed"]
    finally:
        src.stop()


def test_a_resume_that_dies_at_once_is_a_crash_despite_the_old_runs_end(run_dir):
    log = Log(run_dir)
    log.started()
    log.emitter.emit(RunFinished, status="completed")
    log.flush()  # the earlier run ended properly
    proc = FakeProcess()  # `--resume` launched: it will write after what is there
    src = LiveSource(run_dir, proc, poll_interval=0.02)
    src.start()
    try:
        drain_until(src, lambda g: len(g) == 2)
        assert not src.can_command and src.status_hint() is None
        log.started()
        log.emitter.emit(RunFinished, status="completed")
        log.flush()
        drain_until(src, lambda g: len(g) == 2)
        proc.code = 0
        wait_until(lambda: src.exit_code == 0)
        assert src.status_hint() is None  # this launch ended with its own run_finished
    finally:
        src.stop()
    died = FakeProcess(code=2, err="error: cannot resume: no checkpoint.pt\n")
    src = LiveSource(run_dir, died, poll_interval=0.02)
    src.start()
    try:
        wait_until(lambda: src.exit_code == 2)
        assert src.status_hint() == "CRASHED" and "cannot resume" in src.stderr_tail()
    finally:
        src.stop()


# --- EngineProcess ------------------------------------------------------------------------------------


def test_engine_command_line():
    argv = engine_command(Path("runs/x"), ["--preset", "quick"])
    assert argv[1:] == ["-m", "engine", "train", "--run-dir", "runs/x", "--quiet", "--preset", "quick"]


def test_engine_usage_error_shows_as_a_crash_with_its_stderr(run_dir):
    target = run_dir / "new"
    proc = EngineProcess.start(target, ["--no-such-option"])
    assert proc.wait(timeout=30) == 2
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in (OUT_NAME, ERR_NAME):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600
    assert "unrecognized arguments: --no-such-option" in proc.stderr_tail()
    assert proc.stderr_tail(10) == proc.stderr_tail()[-10:]
    src = LiveSource(target, proc, poll_interval=0.02)
    src.start()
    try:
        wait_until(lambda: src.exit_code == 2)
        assert src.status_hint() == "CRASHED"
        assert "usage:" in src.stderr_tail()
    finally:
        src.stop()
    # A second launch in the same directory: stderr_tail shows only its own output.
    again = EngineProcess.start(target, ["--epochs", "-1"])
    again.wait(timeout=30)
    assert "no-such-option" not in again.stderr_tail()


def test_new_run_dir_is_unique_and_private(run_dir):
    now = time.mktime((2025, 3, 4, 5, 6, 7, 0, 0, -1))
    a = new_run_dir(run_dir / "runs", "digits", now=now)
    b = new_run_dir(run_dir / "runs", "digits", now=now)
    assert a.name == "20250304-050607-digits" and b.name == "20250304-050607-digits-2"
    assert a.is_dir() and stat.S_IMODE(a.stat().st_mode) == 0o700


# --- ReplaySource ------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def replay_log(run_dir):
    log = Log(run_dir)
    log.started(epochs=5)
    for n in range(1, 6):
        log.epoch(n, steps=2)
    log.emitter.emit(RunFinished, status="completed")
    log.writer.close()
    return run_dir  # 1 + 5 * 3 + 1 = 17 events


def completed(events):
    return [e.epoch for e in events if e.kind == "epoch_completed"]


def test_replay_releases_two_epochs_a_second_at_speed_two(replay_log):
    clock = Clock()
    src = ReplaySource(replay_log, speed=2, clock=clock)
    src.load()
    first = src.drain()
    assert [e.kind for e in first][:2] == ["run_started", "step_metrics"] and completed(first) == [1]
    assert src.status_hint() == "REPLAY x2"
    clock.t += 0.25
    assert src.drain() == []
    clock.t += 0.25
    assert completed(src.drain()) == [2]
    clock.t += 0.5
    assert completed(src.drain()) == [3]
    clock.t += 1.0  # the UI was late: both due epochs come, in order
    assert completed(src.drain()) == [4, 5]
    clock.t += 0.5
    assert [e.kind for e in src.drain()] == ["run_finished"]
    assert src.at_end and src.status_hint() == "FINISHED (replay)" and src.ending == "FINISHED"
    assert src.drain() == []


def test_replay_pause_step_play_and_speed(replay_log):
    clock = Clock()
    src = ReplaySource(replay_log, speed=1, clock=clock)
    src.load()
    assert completed(src.drain()) == [1]
    src.pause()
    assert src.status_hint() == "REPLAY PAUSED"
    clock.t += 10
    assert src.drain() == []
    src.step()
    assert completed(src.drain()) == [2]
    assert src.epoch == 2 and not src.playing
    src.play()
    assert src.drain() == []  # the next epoch is one interval after play
    clock.t += 1
    assert completed(src.drain()) == [3]
    src.set_speed(4)
    assert src.status_hint() == "REPLAY x4"
    clock.t += 0.25
    assert completed(src.drain()) == [4]
    src.set_speed(0)
    assert src.status_hint() == "REPLAY MAX"
    assert completed(src.drain()) == [5]
    with pytest.raises(ValueError):
        src.set_speed(-1)


def test_replay_seek_rebuilds_from_the_start(replay_log):
    clock = Clock()
    src = ReplaySource(replay_log, speed=1, clock=clock)
    src.load()
    src.drain()
    upto = src.seek(3)
    assert upto == src.events_until(3)
    assert upto[0].kind == "run_started" and completed(upto) == [1, 2, 3] and upto[-1].kind == "epoch_completed"
    assert src.drain() == [] and src.epoch == 3
    clock.t += 1
    assert completed(src.drain()) == [4]
    # Home shows the run as it started (its slots, its config), never an empty screen.
    assert [e.kind for e in src.seek_start()] == ["run_started"] and src.epoch == 0
    clock.t += 1
    assert completed(src.drain()) == [1]
    everything = src.seek_end()
    assert len(everything) == 17 and everything[-1].kind == "run_finished"
    assert src.at_end and src.drain() == []
    assert len(src.seek(99)) == 17 and src.last_epoch == 5


def test_replay_background_load_speed_zero_and_caps(replay_log):
    src = ReplaySource(replay_log / "events.jsonl", speed=0, max_drain=5)
    src.start()
    assert src.wait_loaded(10)
    sizes = []
    while batch := src.drain():
        sizes.append(len(batch))
    assert sizes == [5, 5, 5, 2]


def test_replay_refuses_commands_and_keeps_problems(replay_log):
    with open(replay_log / "events.jsonl", "ab") as f:
        f.write(b"not json\n")
        f.write(b'{"kind": "run_fin')  # a crash mid-line
    src = ReplaySource(replay_log)
    src.load()
    assert not src.can_command and src.exit_code is None and src.stderr_tail() == ""
    assert src.send("pause") == SendResult(False, None, "replay: commands are disabled")
    assert len(src.problems) == 2 and "line 18" in src.problems[0]
    assert len(src.events) == 17


def test_replay_of_a_missing_log_fails_at_once(run_dir):
    with pytest.raises(FileNotFoundError):
        ReplaySource(run_dir)


def test_static_source_hands_over_everything_once(replay_log):
    src = ReplaySource(replay_log)
    src.load()
    static = StaticSource(src.events, status="FINISHED")
    static.start()
    assert len(static.drain()) == 17 and static.drain() == []
    assert not static.can_command and not static.send("pause").ok
    assert static.status_hint() == "FINISHED" and static.problems == []


@pytest.mark.parametrize("kind", ["live", "replay", "static"])
def test_every_source_meets_the_protocol(kind, replay_log):
    src = {"live": lambda: LiveSource(replay_log), "replay": lambda: ReplaySource(replay_log),
           "static": lambda: StaticSource([])}[kind]()
    assert isinstance(src, RunSource)


# --- a resume supersedes the epochs it runs again (SPEC §7) ---------------------------------------------


def resumed_log(run_dir, crash_after=5, checkpoint_at=3):
    """Epochs 1..crash_after, a checkpoint at the end of `checkpoint_at`, killed; returns the writer
    state needed to resume (the seq the checkpoint was captured after)."""
    log = Log(run_dir)
    log.started(epochs=6)
    after = None
    for n in range(1, crash_after + 1):
        log.epoch(n)
        if n == checkpoint_at:
            after = log.emitter.seq
    log.writer.close()
    return after


def write_resume(run_dir, from_epoch, after_seq, until=6):
    path = run_dir / "events.jsonl"
    with RunLogWriter(path, append=True) as writer:
        emitter = Emitter(writer, start_seq=last_seq(path))
        emitter.epoch, emitter.step = from_epoch, from_epoch
        emitter.emit(RunStarted, run_id="r1", config={}, task="digits", topology="cnn", slots=("s1",),
                     isolation={}, device="cpu", planned_epochs=until, resumed=True,
                     resumed_from_epoch=from_epoch, resumed_after_seq=after_seq)
        for n in range(from_epoch + 1, until + 1):
            emitter.epoch = n
            emitter.step += 1
            emitter.emit(StepMetrics, loss=1.0 / n, lr=0.1)
            emitter.emit(EpochCompleted, train_loss=1.0 / n, val_accuracy=90.0 + n)
        emitter.emit(RunFinished, status="completed")


def shown(state):
    """What the user sees of a reduced run: the curves' points, the event log, the header's numbers."""
    return ([(p.epoch, p.val_accuracy) for p in state.history], [line.text for line in state.log],
            state.status, state.epoch, state.last_seq)


def test_live_dashboard_rebuilds_when_a_resume_supersedes_what_it_showed(run_dir):
    after = resumed_log(run_dir)
    src = LiveSource(run_dir, poll_interval=0.02)
    src.start()
    state = RunState()
    try:
        for item in drain_until(src, lambda g: len(g) == 1 + 5 * 2):
            state = apply(state, item)
        assert [p.epoch for p in state.history] == [1, 2, 3, 4, 5]  # the killed attempt, as it happened
        write_resume(run_dir, from_epoch=3, after_seq=after)
        for item in drain_until(src, lambda g: any(getattr(e, "kind", "") == "run_finished" for e in g)):
            state = apply(state, item)
    finally:
        src.stop()
    expected = apply_all(RunState(), read_events(run_dir).events)
    assert [p.epoch for p in expected.history] == [1, 2, 3, 4, 5, 6]
    assert shown(state) == shown(expected)  # epochs 4 and 5 once, with the resumed run's numbers


def test_attaching_to_a_resumed_log_shows_each_epoch_once(run_dir):
    after = resumed_log(run_dir)
    write_resume(run_dir, from_epoch=3, after_seq=after)
    src = LiveSource(run_dir, poll_interval=0.02)
    src.start()
    try:
        got = drain_until(src, lambda g: g and g[-1].kind == "run_finished")
    finally:
        src.stop()
    assert completed(got) == [1, 2, 3, 4, 5, 6]
    assert [e.val_accuracy for e in got if e.kind == "epoch_completed"][3:] == [94.0, 95.0, 96.0]


def test_replay_of_a_resumed_log_shows_each_epoch_once(run_dir):
    after = resumed_log(run_dir)
    write_resume(run_dir, from_epoch=3, after_seq=after)
    src = ReplaySource(run_dir, speed=0)
    src.load()
    assert completed(src.drain()) == [1, 2, 3, 4, 5, 6] and src.last_epoch == 6


# --- skipped lines are counted for the header -------------------------------------------------------------


def test_sources_count_the_lines_they_skipped(run_dir):
    log = Log(run_dir)
    log.started()
    log.writer.close()
    path = run_dir / "events.jsonl"
    with open(path, "ab") as f:
        f.write(b"{broken\n" + path.read_bytes())  # a bad line, then run_started again: a duplicate
    replay = ReplaySource(run_dir)
    replay.load()
    assert replay.skipped_lines == 2
    assert replay.problems[0].startswith("line 2 skipped: not a valid event")
    assert replay.problems[1].startswith("line 3 skipped: seq 1")
    live = LiveSource(run_dir, poll_interval=0.02)
    live.start()
    try:
        wait_until(lambda: live.caught_up)
        assert live.skipped_lines == 2 and live.problems == replay.problems
    finally:
        live.stop()
    assert StaticSource([]).skipped_lines == 0


# --- the real engine process (slow) -------------------------------------------------------------------


def follow_until(src, kinds, timeout=120.0):
    return drain_until(src, lambda g: any(e.kind in kinds for e in g), timeout)


@pytest.mark.slow
def test_real_engine_runs_in_its_own_session_and_finishes(run_dir):
    proc = EngineProcess.start(run_dir / "r", ["--preset", "quick", "--epochs", "3"])
    src = LiveSource(run_dir / "r", proc)
    src.start()
    try:
        assert os.getpgid(proc.pid) != os.getpgid(0)  # a hang-up of our terminal never reaches it
        got = follow_until(src, {"run_finished", "run_failed"})
        assert got[0].kind == "run_started" and got[-1].kind == "run_finished"
        assert completed(got) == [1, 2, 3]
        assert proc.wait(timeout=30) == 0
        wait_until(lambda: src.exit_code == 0)
        assert src.status_hint() is None
        assert (run_dir / "r" / ERR_NAME).exists()
    finally:
        src.stop()


@pytest.mark.slow
def test_real_engine_crash_ends_the_log_with_run_failed(run_dir):
    proc = EngineProcess.start(run_dir / "r", ["--preset", "quick", "--epochs", "3",
                                               "--set", "faults.crash_at_epoch=1"])
    src = LiveSource(run_dir / "r", proc)
    src.start()
    try:
        got = follow_until(src, {"run_finished", "run_failed"})
        assert got[-1].kind == "run_failed" and "fault drill" in got[-1].message
        assert proc.wait(timeout=30) == 1
        wait_until(lambda: src.exit_code == 1)
        assert src.status_hint() is None  # the log's run_failed carries the traceback
    finally:
        src.stop()


@pytest.mark.slow
def test_real_engine_takes_commands_then_a_kill_is_a_crash_and_attach_says_detached(run_dir):
    run = run_dir / "r"
    proc = EngineProcess.start(run, ["--preset", "quick", "--epochs", "1000"])
    src = LiveSource(run, proc)
    src.start()
    try:
        follow_until(src, {"run_started"})
        res = src.send("pause")
        assert res.ok, res.error
        got = follow_until(src, {"command_applied", "command_rejected"}, timeout=60)
        answer = next(e for e in got if e.kind in ("command_applied", "command_rejected"))
        assert answer.kind == "command_applied" and answer.command_id == res.command_id
        os.killpg(proc.pid, signal.SIGKILL)
        wait_until(lambda: src.status_hint() == "CRASHED", timeout=10)
        assert src.exit_code == -signal.SIGKILL and not src.can_command
    finally:
        src.stop()
    attached = LiveSource(run, probe_interval=0.1)
    attached.start()
    try:
        wait_until(lambda: attached.status_hint() == "DETACHED", timeout=10)
        assert attached.drain()[0].kind == "run_started"  # full history on attach
        assert not attached.send("resume").ok
    finally:
        attached.stop()


@pytest.mark.slow
def test_a_run_under_torchrun_is_watched_and_steered_through_rank_0_and_attach_replays_it(run_dir):
    """`esper-tui train --nproc-per-node 2`: the same source follows rank 0's log, its commands
    reach every rank, and a later `attach` shows the whole run."""
    run = run_dir / "r"
    proc = EngineProcess.start(run, ["--preset", "quick", "--epochs", "1000", "--no-autopilot", "--device", "cpu"],
                               nproc=2)
    assert proc.argv[1:4] == ["-m", "torch.distributed.run", "--standalone"]
    src = LiveSource(run, proc)
    src.start()
    try:
        started = follow_until(src, {"run_started"})[0]
        assert started.distributed["world_size"] == 2 and started.distributed["rank"] == 0
        sent = [src.send("germinate", slot="block1", blueprint="conv_light"), src.send("stop")]
        assert all(r.ok for r in sent), sent
        got = follow_until(src, {"run_finished", "run_failed"})
        answers = {e.command_id: e.kind for e in got if e.kind in ("command_applied", "command_rejected")}
        assert answers == {r.command_id: "command_applied" for r in sent}
        verified = [e for e in got if e.kind == "ranks_verified"]
        assert any("germinate block1 (operator)" in v.trigger for v in verified)
        assert all(v.in_sync for v in verified) and verified[-1].trigger == "stop"
        assert got[-1].kind == "run_finished" and got[-1].status == "stopped"
        assert proc.wait(timeout=60) == 0
    finally:
        src.stop()
    attached = LiveSource(run, probe_interval=0.1)
    attached.start()
    try:
        wait_until(lambda: attached.caught_up, timeout=10)
        history = attached.drain()
        assert history[0].kind == "run_started" and history[-1].kind == "run_finished"
    finally:
        attached.stop()
