"""The run log on disk (SPEC §7, §8): write/read round trip, crash tolerance, permissions, tailing."""

import os
import stat
import threading
import time

import pytest

from engine.telemetry import (
    Emitter,
    LogError,
    LogFollower,
    RunLogWriter,
    StepMetrics,
    WarningEvent,
    follow,
    iter_events,
    last_seq,
    read_events,
    resolve_log_path,
)
from tests.engine.test_telemetry import every_kind


def step(seq, loss=0.5):
    return StepMetrics(seq=seq, time=1000.0 + seq, epoch=1, step=seq, loss=loss, lr=0.01)


def write_log(path, events):
    with RunLogWriter(path) as writer:
        for event in events:
            writer.write(event)
    return path


def line_of(event):
    return event.model_dump_json(by_alias=True) + "\n"


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "run" / "events.jsonl"


def test_written_events_read_back_equal(log_path):
    events = every_kind()
    write_log(log_path, events)
    read = read_events(log_path)
    assert read.events == events and read.problems == [] and not read.truncated
    assert log_path.read_text().count("\n") == len(events)
    assert list(iter_events(log_path)) == events


def test_reader_accepts_the_run_directory(log_path):
    events = [step(1), step(2)]
    write_log(log_path, events)
    assert resolve_log_path(log_path.parent) == log_path
    assert read_events(log_path.parent).events == events


def test_missing_log_says_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run log at"):
        read_events(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no events.jsonl"):
        read_events(tmp_path)


def test_log_is_private_to_its_owner(log_path):
    write_log(log_path, [step(1)])
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(log_path.parent.stat().st_mode) == 0o700


def test_existing_file_is_made_private_and_existing_dir_left_alone(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text("")
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    write_log(path, [step(1)])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755  # never chmod a directory we did not create


def test_flush_makes_lines_visible_to_readers(log_path):
    writer = RunLogWriter(log_path)
    writer.write(step(1))
    assert read_events(log_path).events == []  # still buffered
    writer.flush()
    assert [e.seq for e in read_events(log_path).events] == [1]
    writer.write(step(2))
    writer.flush(fsync=True)
    assert [e.seq for e in read_events(log_path).events] == [1, 2]
    writer.close()
    writer.close()  # idempotent
    assert writer.closed


def test_emitter_into_the_log_flushes_lifecycle_events(log_path):
    writer = RunLogWriter(log_path)
    emitter = Emitter(writer)
    emitter.emit(StepMetrics, loss=0.1, lr=0.1)
    assert read_events(log_path).events == []
    emitter.emit(WarningEvent, code="c", message="m")  # lifecycle: flushed at once, with what came before
    assert [e.kind for e in read_events(log_path).events] == ["step_metrics", "warning"]
    emitter.close()


def test_truncated_last_line_is_tolerated(log_path):
    events = [step(i) for i in range(1, 6)]
    write_log(log_path, events)
    with open(log_path, "a") as f:
        f.write(line_of(step(6))[:25])  # the writer died mid-line
    read = read_events(log_path, strict=True)  # tolerated even in strict mode
    assert read.events == events
    (problem,) = read.problems
    assert (problem.line_no, problem.kind) == (6, "truncated") and read.truncated
    assert "incomplete" in problem.message


def test_complete_last_line_without_newline_is_kept(log_path):
    log_path.parent.mkdir()
    log_path.write_text(line_of(step(1)) + line_of(step(2)).rstrip("\n"))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 2] and read.problems == []


def test_corrupt_middle_line_is_reported_with_its_number_and_skipped(log_path):
    log_path.parent.mkdir()
    lines = [line_of(step(1)), "{not json\n", line_of(step(2)), "\n", "   \n", line_of(step(3))]
    log_path.write_text("".join(lines))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 2, 3]
    (problem,) = read.problems  # blank lines are not problems
    assert (problem.line_no, problem.kind) == (2, "invalid")
    assert "JSON" in problem.message


@pytest.mark.parametrize(
    "bad, words",
    [
        ('{"kind": "__import__(\'os\').system(\'rm -rf ~\')", "seq": 2, "time": 0, "epoch": 0, "step": 0}',
         "unknown kind"),
        ('{"kind": "step_metrics", "seq": "two", "time": 0, "epoch": 0, "step": 0, "loss": 1, "lr": 1}', "seq"),
        ('{"kind": "stage_changed", "seq": 2, "time": 0, "epoch": 0, "step": 0, "slot": "b", '
         '"from": "DORMANT", "to": "HATCHED", "cause": "gate"}', "to"),
        ("[1, 2, 3]", "object"),
        ('"just a string"', ""),
    ],
)
def test_garbage_lines_are_data_not_code(log_path, bad, words):
    log_path.parent.mkdir()
    log_path.write_text(line_of(step(1)) + bad + "\n" + line_of(step(3)))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 3]
    (problem,) = read.problems
    assert problem.line_no == 2 and problem.kind == "invalid" and words in problem.message


def test_strict_mode_refuses_a_bad_line_naming_file_and_line(log_path):
    log_path.parent.mkdir()
    log_path.write_text(line_of(step(1)) + line_of(step(2)) + '{"kind": "nope"}\n' + line_of(step(4)))
    with pytest.raises(LogError, match=r"line 3 .*without --strict") as info:
        read_events(log_path, strict=True)
    assert str(log_path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_append_continues_a_log(log_path):
    write_log(log_path, [step(1), step(2)])
    with RunLogWriter(log_path, append=True) as writer:
        writer.write(step(3))
    assert [e.seq for e in read_events(log_path).events] == [1, 2, 3]
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_append_after_a_crash_cuts_the_partial_line(log_path):
    write_log(log_path, [step(1), step(2)])
    with open(log_path, "a") as f:
        f.write(line_of(step(3))[:30])
    assert last_seq(log_path) == 2
    with RunLogWriter(log_path, append=True) as writer:
        writer.write(step(3))
    read = read_events(log_path, strict=True)
    assert [e.seq for e in read.events] == [1, 2, 3] and read.problems == []


def test_append_after_a_complete_line_without_newline_keeps_it(log_path):
    log_path.parent.mkdir()
    log_path.write_text(line_of(step(1)).rstrip("\n"))
    with RunLogWriter(log_path, append=True) as writer:
        writer.write(step(2))
    assert [e.seq for e in read_events(log_path, strict=True).events] == [1, 2]


def test_overwrite_mode_starts_a_fresh_log(log_path):
    write_log(log_path, [step(1), step(2)])
    write_log(log_path, [step(1)])
    assert [e.seq for e in read_events(log_path).events] == [1]


def test_last_seq(log_path, tmp_path):
    assert last_seq(tmp_path / "missing.jsonl") == 0
    write_log(log_path, [])
    assert last_seq(log_path) == 0
    write_log(log_path, [step(i) for i in range(1, 8)])
    assert last_seq(log_path) == 7 == last_seq(log_path.parent)
    with open(log_path, "a") as f:
        f.write("\n{garbage}\n" + line_of(step(8))[:20])
    assert last_seq(log_path) == 7  # the last *valid* event


def test_last_seq_reads_only_the_tail_but_finds_far_lines(log_path):
    # A big last event (a huge config) and a long invalid tail make it look back past one chunk.
    from engine.telemetry import RunStarted

    big = RunStarted(seq=2, time=0, epoch=0, step=0, run_id="r", config={"blob": "x" * 200_000}, task="t",
                     topology="cnn", slots=[], isolation={}, device="cpu", planned_epochs=1)
    write_log(log_path, [step(1), big])
    assert last_seq(log_path) == 2
    with open(log_path, "a") as f:
        f.write(("{bad}\n" * 30_000))
    assert last_seq(log_path) == 2


def test_resumed_emitter_continues_the_numbering(log_path):
    with RunLogWriter(log_path) as writer:
        emitter = Emitter(writer)
        for _ in range(3):
            emitter.emit(StepMetrics, loss=0.1, lr=0.1)
    with RunLogWriter(log_path, append=True) as writer:
        emitter = Emitter(writer, start_seq=last_seq(log_path))
        emitter.emit(StepMetrics, loss=0.1, lr=0.1)
    assert [e.seq for e in read_events(log_path).events] == [1, 2, 3, 4]


# --- following a live log -------------------------------------------------------------------------


def test_follower_holds_back_a_partial_line(log_path):
    follower = LogFollower(log_path)
    assert follower.poll() == []  # the file does not exist yet
    log_path.parent.mkdir()
    text = line_of(step(1))
    with open(log_path, "a") as f:
        f.write(text[:20])
    assert follower.poll() == []
    with open(log_path, "a") as f:
        f.write(text[20:] + line_of(step(2)) + line_of(step(3))[:10])
    assert [e.seq for e in follower.poll()] == [1, 2]
    assert follower.poll() == []
    with open(log_path, "a") as f:
        f.write(line_of(step(3))[10:])
    assert [e.seq for e in follower.poll()] == [3]
    assert follower.problems == []


def test_follower_reports_invalid_lines_and_skips_them(log_path):
    log_path.parent.mkdir()
    log_path.write_text(line_of(step(1)) + "oops\n\n" + line_of(step(2)))
    follower = LogFollower(log_path.parent)  # a run directory works too
    assert [e.seq for e in follower.poll()] == [1, 2]
    (problem,) = follower.problems
    assert (problem.line_no, problem.kind) == (2, "invalid")


def test_follower_starts_over_when_the_log_is_replaced(log_path):
    write_log(log_path, [step(1), step(2)])
    follower = LogFollower(log_path)
    assert len(follower.poll()) == 2
    write_log(log_path, [step(1)])  # a new run reusing the path: the file shrank
    assert [e.seq for e in follower.poll()] == [1]


def test_follow_yields_batches_and_stops_when_asked(log_path):
    done = threading.Event()
    batches = []

    def writer():
        with RunLogWriter(log_path) as w:
            for i in range(1, 4):
                w.write(step(i))
                w.flush()
                time.sleep(0.03)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    stopped = False

    def stop():
        return stopped

    for batch in follow(log_path, stop, interval=0.01):
        assert batch  # only non-empty batches are yielded
        batches.append(batch)
        if sum(map(len, batches)) == 3:
            stopped = True
    thread.join()
    assert [e.seq for b in batches for e in b] == [1, 2, 3]


def test_follow_can_be_cancelled_while_waiting(tmp_path):
    deadline = time.monotonic() + 0.15
    start = time.monotonic()
    batches = list(follow(tmp_path / "never.jsonl", lambda: time.monotonic() > deadline, interval=5.0))
    assert batches == []
    assert time.monotonic() - start < 1.0  # a 5 s interval is still cut short by stop()


def test_permissions_hold_under_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "deep" / "run" / "events.jsonl"
        write_log(path, [step(1)])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_follower_can_catch_up_in_slices(log_path):
    write_log(log_path, [step(i) for i in range(1, 101)])
    size = log_path.stat().st_size
    follower = LogFollower(log_path)
    seqs, polls = [], 0
    while follower.offset < size:
        seqs += [e.seq for e in follower.poll(max_bytes=1000)]
        polls += 1
    assert seqs == list(range(1, 101)) and polls == -(-size // 1000)
