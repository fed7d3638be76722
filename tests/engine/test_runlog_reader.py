"""Reading a run log the way a user needs it (SPEC §7): a resume's re-run epochs show once, every odd
line is reported (and what was done with it), and long lines cost linear time."""

from __future__ import annotations

import builtins
import json

import pytest

from engine.telemetry import (
    CheckpointSaved,
    Emitter,
    EpochCompleted,
    LogError,
    LogFollower,
    RunFinished,
    RunLogWriter,
    RunStarted,
    StepMetrics,
    iter_events,
    last_seq,
    read_events,
)
from engine.telemetry import logwriter, runlog
from engine.telemetry.runlog import Supersession, supersessions


@pytest.fixture
def log_path(tmp_path):
    return tmp_path / "run" / "events.jsonl"


def started(emitter, resumed_from=None, after_seq=None):
    return emitter.emit(
        RunStarted, run_id="r1", config={}, task="digits", topology="cnn", slots=("s1",), isolation={},
        device="cpu", planned_epochs=6, resumed=resumed_from is not None, resumed_from_epoch=resumed_from,
        resumed_after_seq=after_seq,
    )


def epoch(emitter, n, accuracy):
    emitter.epoch = n
    emitter.step += 1
    emitter.emit(StepMetrics, loss=1.0 / n, lr=0.1)
    return emitter.emit(EpochCompleted, val_accuracy=accuracy)


def crashed_attempt(path, epochs=5, checkpoint_at=3):
    """A run that checkpoints at the end of `checkpoint_at` and is killed after `epochs` epochs.
    Returns the seq of the last event written before the checkpoint was captured."""
    with RunLogWriter(path) as writer:
        emitter = Emitter(writer)
        started(emitter)
        after = None
        for n in range(1, epochs + 1):
            epoch(emitter, n, accuracy=10.0 + n)
            if n == checkpoint_at:
                after = emitter.seq
                emitter.emit(CheckpointSaved, path="checkpoint.pt")
    return after


def resume(path, from_epoch, after_seq, until=6, exact=True):
    """`--resume` the way the engine does it: numbering continues from the log's last seq."""
    with RunLogWriter(path, append=True) as writer:
        emitter = Emitter(writer, start_seq=last_seq(path))
        emitter.epoch = from_epoch
        started(emitter, resumed_from=from_epoch, after_seq=after_seq if exact else None)
        for n in range(from_epoch + 1, until + 1):
            epoch(emitter, n, accuracy=50.0 + n)
        emitter.emit(RunFinished, status="completed")


def accuracies(events):
    return [(e.epoch, e.val_accuracy) for e in events if e.kind == "epoch_completed"]


# --- item 7: a resume supersedes the epochs it runs again ------------------------------------------


@pytest.mark.parametrize("exact", [True, False], ids=["resumed_after_seq", "resumed_from_epoch only"])
def test_a_resume_shows_every_epoch_once(log_path, exact):
    after = crashed_attempt(log_path)
    resume(log_path, from_epoch=3, after_seq=after, exact=exact)
    read = read_events(log_path, strict=True)
    # Epochs 4 and 5 of the killed attempt were run again: only the resumed ones count.
    assert accuracies(read.events) == [(1, 11.0), (2, 12.0), (3, 13.0), (4, 54.0), (5, 55.0), (6, 56.0)]
    # Two epochs of step_metrics + epoch_completed; the exact range also takes the checkpoint_saved
    # written after the checkpoint was captured, which the epoch rule (epoch 3) cannot tell apart.
    assert read.superseded == (5 if exact else 4) and read.problems == []
    assert list(iter_events(log_path)) == read.events  # streaming drops the same events


def test_a_resume_of_a_resume_supersedes_what_the_second_attempt_redid(log_path):
    after = crashed_attempt(log_path, epochs=5, checkpoint_at=3)
    resume(log_path, from_epoch=3, after_seq=after, until=6)
    # The second attempt is killed too (its run_finished never mattered): resume from epoch 4.
    events = read_events(log_path).events
    second_after = next(e.seq for e in events if e.kind == "epoch_completed" and e.epoch == 4)
    resume(log_path, from_epoch=4, after_seq=second_after, until=7)
    read = read_events(log_path)
    assert [n for n, _ in accuracies(read.events)] == [1, 2, 3, 4, 5, 6, 7]
    assert [e.status for e in read.events if e.kind == "run_finished"] == ["completed"]  # only the last one


def test_superseded_events_are_a_pure_rule_of_the_run_starts():
    def start(seq, epoch=None, after=None):
        return RunStarted(seq=seq, time=0, epoch=0, step=0, run_id="r", config={}, task="t", topology="cnn",
                          slots=(), isolation={}, device="cpu", planned_epochs=9, resumed=epoch is not None,
                          resumed_from_epoch=epoch, resumed_after_seq=after)

    spans = supersessions([start(1), start(50, epoch=3, after=30), start(80, epoch=6, after=40), start(90)])
    assert spans == (Supersession(30, 50), Supersession(40, 80))
    covered = [seq for seq in range(1, 100) if any(s.covers(seq, epoch=9) for s in spans)]
    assert covered == list(range(31, 50)) + list(range(50, 80))  # the second run_started itself too
    # Without the seq, the epoch decides, within the attempt since the previous run_started.
    (fallback,) = supersessions([start(1), start(20, epoch=3)])
    assert fallback == Supersession(1, 20, after_epoch=3)
    assert not fallback.covers(10, epoch=3) and fallback.covers(10, epoch=4) and not fallback.covers(20, epoch=4)


@pytest.mark.parametrize("chunk", [16, 64, 1 << 20])
def test_the_resumes_are_found_by_a_byte_search_across_chunk_ends(log_path, monkeypatch, chunk):
    after = crashed_attempt(log_path)
    resume(log_path, from_epoch=3, after_seq=after)
    with open(log_path, "a") as f:
        f.write('{"kind":"warning","code":"run_started","message":"x"}\n')  # names the kind: a false hit
    monkeypatch.setattr(runlog, "_SCAN_CHUNK", chunk)
    monkeypatch.setattr(runlog, "_TAIL_CHUNK", chunk)
    found = runlog.find_run_starts(log_path)
    assert found == [e for e in read_events(log_path).events if e.kind == "run_started"]
    assert [e.resumed for e in found] == [False, True]


# --- item 12: odd lines are reported, with what was done about them -----------------------------------


def lines_of(*events):
    return "".join(e.model_dump_json(by_alias=True) + "\n" for e in events)


def steps(*seqs):
    return [StepMetrics(seq=s, time=1000.0 + s, epoch=1, step=s, loss=0.5, lr=0.1) for s in seqs]


def test_swapped_lines_are_kept_and_reported(log_path):
    log_path.parent.mkdir()
    log_path.write_text(lines_of(*steps(1, 3, 2, 4)))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 3, 2, 4]
    (problem,) = read.problems
    assert (problem.line_no, problem.kind, problem.skipped) == (3, "order", False)
    assert "seq 2" in problem.message and "seq 3" in problem.message
    assert problem.describe().startswith("line 3: ") and "kept" in problem.describe()


def test_a_duplicated_line_is_dropped_and_reported(log_path):
    log_path.parent.mkdir()
    one, two, three = steps(1, 2, 3)
    log_path.write_text(lines_of(one, two, two, three, one))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 2, 3]
    assert [(p.line_no, p.kind, p.skipped) for p in read.problems] == [(3, "duplicate", True), (5, "duplicate", True)]
    assert read.problems[0].describe().startswith("line 3 skipped: seq 2")


def test_a_seq_going_backwards_into_a_gap_is_kept(log_path):
    # Line 2 was unreadable (its seq unknown): a later line with a lower seq may be that one.
    log_path.parent.mkdir()
    a, b, c = steps(1, 3, 2)
    log_path.write_text(lines_of(a) + "{broken\n" + lines_of(b, c))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 3, 2]
    assert [(p.line_no, p.kind) for p in read.problems] == [(2, "invalid"), (4, "order")]


@pytest.mark.parametrize(
    "edit, words",
    [
        (lambda d: d.update(schema_version=99), "schema_version 99"),
        (lambda d: d.pop("schema_version"), "no schema_version"),
    ],
    ids=["unknown", "missing"],
)
def test_a_run_started_of_an_unknown_schema_is_read_and_reported(log_path, edit, words):
    with RunLogWriter(log_path) as writer:
        started(Emitter(writer))
    data = json.loads(log_path.read_text())
    edit(data)
    log_path.write_text(json.dumps(data) + "\n" + lines_of(*steps(2)))
    read = read_events(log_path)
    assert [e.kind for e in read.events] == ["run_started", "step_metrics"]
    (problem,) = read.problems
    assert (problem.line_no, problem.kind, problem.skipped) == (1, "schema", False) and words in problem.message


def test_a_time_that_is_not_a_number_is_kept_and_reported(log_path):
    # pydantic reads NaN into `time: float`; events are ordered by seq, so the event is still usable.
    log_path.parent.mkdir()
    bad = lines_of(*steps(2)).replace('"time":1002.0', '"time":NaN')
    log_path.write_text(lines_of(*steps(1)) + bad + lines_of(*steps(3)))
    read = read_events(log_path)
    assert [e.seq for e in read.events] == [1, 2, 3]
    (problem,) = read.problems
    assert (problem.line_no, problem.kind, problem.skipped) == (2, "time", False) and "nan" in problem.message


def test_strict_refuses_any_odd_line_but_a_cut_off_last_one(log_path):
    log_path.parent.mkdir()
    log_path.write_text(lines_of(*steps(1, 2, 2)))
    with pytest.raises(LogError, match=r"line 3 skipped: seq 2.*without --strict"):
        read_events(log_path, strict=True)
    log_path.write_text(lines_of(*steps(1, 2)) + lines_of(*steps(3))[:20])
    assert read_events(log_path, strict=True).truncated


def test_the_follower_reports_what_the_reader_reports(log_path):
    log_path.parent.mkdir()
    a, b, c, d = steps(1, 2, 3, 4)
    log_path.write_text(lines_of(a, c, b, b) + "{broken\n" + lines_of(d))
    follower = LogFollower(log_path)
    assert [e.seq for e in follower.poll()] == [e.seq for e in read_events(log_path).events] == [1, 3, 2, 4]
    assert follower.problems == read_events(log_path).problems


# --- item 13: long lines cost linear time ------------------------------------------------------------------


class CountingFile:
    """A file opened through `open` whose reads are counted (bytes asked for and returned)."""

    def __init__(self, file, counter):
        self._file, self._counter = file, counter

    def read(self, n=-1):
        data = self._file.read(n)
        self._counter["read"] += len(data)
        return data

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def test_tail_repair_reads_a_long_cut_off_line_a_bounded_number_of_times(log_path, monkeypatch):
    size = 8 << 20
    log_path.parent.mkdir()
    log_path.write_bytes(lines_of(*steps(1)).encode() + b'{"kind":"step_metrics","x":"' + b"x" * size)
    counter = {"read": 0}
    monkeypatch.setattr(logwriter, "open", lambda *a, **k: CountingFile(builtins.open(*a, **k), counter),
                        raising=False)
    with RunLogWriter(log_path, append=True) as writer:
        writer.write(steps(2)[0])
    assert [e.seq for e in read_events(log_path, strict=True).events] == [1, 2]  # the partial line is cut
    assert counter["read"] <= 3 * size  # the old growing window read ~17x the tail


class Chunk(bytes):
    """Bytes read from the log: every scan or copy of it (or of a buffer built from it) is counted."""

    counter = {"touched": 0}

    def _touch(self, n):
        Chunk.counter["touched"] += n

    def split(self, *a, **k):
        self._touch(len(self))
        return bytes.split(self, *a, **k)

    def find(self, *a, **k):
        self._touch(len(self))
        return bytes.find(self, *a, **k)

    def __add__(self, other):
        self._touch(len(self) + len(other))
        return Chunk(bytes.__add__(self, other))

    def __radd__(self, other):
        self._touch(len(self) + len(other))
        return Chunk(bytes(other) + bytes(self))


def test_following_a_long_line_in_slices_is_linear(log_path, monkeypatch):
    size, slice_ = 8 << 20, 64 << 10
    log_path.parent.mkdir()
    long_line = b'{"kind":"step_metrics","x":"' + b"x" * size + b'"}\n'
    log_path.write_bytes(long_line + lines_of(*steps(2)).encode())

    class ChunkFile(CountingFile):
        def read(self, n=-1):
            return Chunk(super().read(n))

    Chunk.counter["touched"] = 0
    monkeypatch.setattr(runlog, "open", lambda *a, **k: ChunkFile(builtins.open(*a, **k), {"read": 0}),
                        raising=False)
    follower = LogFollower(log_path)
    seqs = []
    while follower.offset < log_path.stat().st_size:
        seqs += [e.seq for e in follower.poll(max_bytes=slice_)]
    assert seqs == [2] and [p.line_no for p in follower.problems] == [1]
    assert Chunk.counter["touched"] <= 4 * size  # the old follower re-joined what it held on every poll


def test_a_line_over_the_cap_is_reported_and_skipped_not_buffered(log_path):
    log_path.parent.mkdir()
    follower = LogFollower(log_path, max_line=1000)
    with open(log_path, "ab") as f:
        f.write(lines_of(*steps(1)).encode() + b'{"kind":"step_metrics","blob":"')
    assert [e.seq for e in follower.poll()] == [1]
    for _ in range(10):  # a line that keeps growing is held only up to the cap
        with open(log_path, "ab") as f:
            f.write(b"y" * 600)
        assert follower.poll() == [] and follower.pending_bytes <= 1000
    (problem,) = follower.problems
    assert (problem.line_no, problem.kind, problem.skipped) == (2, "too_long", True)
    with open(log_path, "ab") as f:
        f.write(b'"}\n' + lines_of(*steps(2, 3)).encode())
    assert [e.seq for e in follower.poll()] == [2, 3]  # its end is skipped with it; the next lines are read
    assert len(follower.problems) == 1 and follower.line_no == 4
