"""Terminal-safe text (SPEC §8 security): outside strings are shown as text, never obeyed by a terminal.

`safe_text` itself, and the run log reader's boundary: every string of a crafted log line comes out of
`parse_line` (hence replay, attach and every other reader) with its control characters escaped.
"""

from __future__ import annotations

import json
import re

import pytest

from engine.telemetry import RunLogWriter, read_events
from engine.telemetry.events import CommandRejected, RunFailed, RunStarted, WarningEvent
from engine.telemetry.runlog import LogFollower, parse_line
from engine.telemetry.safe_text import clean_json_line, safe_data, safe_text

# What a crafted log was seen to do through the dashboard and the headless printer.
OSC_TITLE = "\x1b]0;pwned\x07"
OSC_52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"  # writes the clipboard
CLEAR = "\x1b[2J"
C1_CSI = "\x9b2J"  # the 8-bit CSI: a clear screen without any ESC
EVIL = f"a{OSC_TITLE}b{OSC_52}c{CLEAR}d{C1_CSI}e\x7ff\rg"
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # what must never survive (tab and newline may)
STAMP = dict(seq=1, time=0.0, epoch=0, step=0)


def raw_controls(text: str) -> list[str]:
    return RAW.findall(text)


# --- safe_text ---------------------------------------------------------------------------------------


def test_every_escape_sequence_is_written_out_visibly():
    out = safe_text(EVIL)
    assert not raw_controls(out) and "\n" not in out
    assert out == "a\\x1b]0;pwned\\x07b\\x1b]52;c;ZWNobyBwd25lZA==\\x07c\\x1b[2Jd\\x9b2Je\\x7ff\\rg"


@pytest.mark.parametrize("code", [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)])
def test_each_c0_del_and_c1_control_is_escaped(code):
    out = safe_text(f"x{chr(code)}y")
    assert out != f"x{chr(code)}y" and not raw_controls(out) and "\n" not in out and "\t" not in out
    assert out.isprintable()


def test_multiline_keeps_newlines_and_tabs_but_nothing_else():
    text = "Traceback:\n\tFile x\x1b[2J\r\n"
    assert safe_text(text, multiline=True) == "Traceback:\n\tFile x\\x1b[2J\\r\n"
    assert safe_text(text) == "Traceback:\\n\\tFile x\\x1b[2J\\r\\n"


def test_lone_surrogates_are_escaped_so_the_text_can_be_encoded():
    assert safe_text("a\ud800b") == "a\\ud800b"
    safe_text("a\ud800b").encode("utf-8")


def test_clean_text_is_returned_unchanged_and_cleaning_is_idempotent():
    plain = "block1: TRAINING -> BLENDING (gate) — 93.1 % [ok] é 漢"
    assert safe_text(plain) is plain
    once = safe_text(EVIL)
    assert safe_text(once) == once


def test_safe_data_cleans_nested_values_and_keys_and_keeps_identity_when_clean():
    data = {"config": {"task": EVIL, f"k{CLEAR}": [1, OSC_52, None, 2.5]}, "message": "a\nb\x1b", "n": 3}
    out = safe_data(data, multiline_keys={"message"})
    assert not raw_controls(json.dumps(out, ensure_ascii=False))
    assert out["config"]["task"] == safe_text(EVIL)
    assert out["config"]["k\\x1b[2J"][1] == safe_text(OSC_52)
    assert out["message"] == "a\nb\\x1b"  # a multi-line field keeps its newline
    clean = {"a": [1, "x"], "b": {"c": "d"}}
    assert safe_data(clean) is clean


def test_clean_json_line_leaves_clean_and_invalid_lines_alone():
    ok = b'{"kind":"warning","code":"x","message":"caf\xc3\xa9 \\"q\\""}\n'
    assert clean_json_line(ok) is ok
    broken = b'{"kind":"warning","message":"\\u001b[2J'  # truncated: the validator must see it as it is
    assert clean_json_line(broken) is broken
    bad = b'{"message":"\\u001b", "x": NaN'
    assert clean_json_line(bad) is bad


# --- the reader's boundary ---------------------------------------------------------------------------


def written(tmp_path, *events) -> bytes:
    path = tmp_path / "events.jsonl"
    with RunLogWriter(path) as w:
        for event in events:
            w.write(event)
    return path.read_bytes()


def test_parse_line_escapes_strings_written_by_the_real_writer(tmp_path):
    """The writer JSON-escapes C0 (\\u001b) but writes DEL and C1 raw: both forms are caught."""
    data = written(tmp_path, WarningEvent(**STAMP, slot=f"s{C1_CSI}", code=OSC_TITLE, message=EVIL))
    assert b"\\u001b" in data and b"\xc2\x9b" in data and b"\x7f" in data  # the forms on disk
    event = parse_line(data)
    assert event.kind == "warning"
    for text in (event.slot, event.code, event.message):
        assert not raw_controls(text), text
    assert event.message == safe_text(EVIL, multiline=True)


@pytest.mark.parametrize(
    "field, raw",
    [
        ("message", b'"x\\u001b]0;t\\u0007y"'),
        ("message", b'"x\\u009b2Jy"'),  # C1 CSI, escaped
        ("message", b'"x\xc2\x9b2Jy"'),  # C1 CSI, raw UTF-8
        ("message", b'"x\\u001B[2Jy"'),  # upper-case hex
        ("message", b'"x\\ry\\bz\\f"'),
        ("message", b'"x\x7fy"'),  # raw DEL
        ("code", b'"a\\nb"'),  # one-line fields cannot pose as several lines
    ],
)
def test_parse_line_escapes_every_encoding_of_a_control(field, raw):
    fields = {"code": b'"c"', "message": b'"m"'}
    fields[field] = raw
    line = b'{"kind":"warning","seq":1,"time":0,"epoch":0,"step":0,"code":%s,"message":%s}\n' % (
        fields["code"], fields["message"])
    event = parse_line(line)
    text = getattr(event, field)
    assert not raw_controls(text) and "\n" not in text, text
    assert "\\" in text  # written out, not dropped


def test_parse_line_cleans_inside_dicts_and_keeps_traceback_lines(tmp_path):
    data = written(
        tmp_path,
        RunStarted(**STAMP, run_id="r", config={"task": EVIL, "nested": {"k": [CLEAR]}}, task=OSC_TITLE,
                   topology="cnn", slots=("block1",), isolation={}, device="cpu", planned_epochs=1,
                   blueprints={f"bp{CLEAR}": f"desc{OSC_52}"}),
        CommandRejected(**{**STAMP, "seq": 2}, command_id="c1",
                        command={"command": "cull", "slot": "block1", "reason": EVIL}, reason=C1_CSI),
        RunFailed(**{**STAMP, "seq": 3}, error_type=f"E{CLEAR}", message=f"boom{OSC_TITLE}\nline 2",
                  traceback=f"Traceback (most recent call last):\n  File {OSC_52}\n\tx\x9b2J\n"),
    )
    started, rejected, failed = (parse_line(line) for line in data.splitlines(keepends=True))
    assert not raw_controls(json.dumps(started.config, ensure_ascii=False))
    assert started.config["nested"]["k"] == ["\\x1b[2J"]
    assert started.blueprints == {"bp\\x1b[2J": safe_text(f"desc{OSC_52}")}
    assert rejected.command["reason"] == safe_text(EVIL) and rejected.reason == "\\x9b2J"
    assert failed.error_type == "E\\x1b[2J"
    assert failed.message == "boom\\x1b]0;pwned\\x07\nline 2"
    assert failed.traceback == "Traceback (most recent call last):\n  File \\x1b]52;c;ZWNobyBwd25lZA==\\x07\n\tx\\x9b2J\n"


def test_read_events_and_the_follower_both_clean(tmp_path):
    data = written(tmp_path, WarningEvent(**STAMP, code="c", message=EVIL),
                   WarningEvent(**{**STAMP, "seq": 2}, code="c", message="clean"))
    path = tmp_path / "events.jsonl"
    read = read_events(path, strict=True)
    assert [e.message for e in read.events] == [safe_text(EVIL, multiline=True), "clean"]
    follower = LogFollower(path)
    assert [e.message for e in follower.poll()] == [safe_text(EVIL, multiline=True), "clean"]
    assert data  # the file itself is untouched: the log keeps what the engine wrote


def test_a_truncated_crafted_last_line_is_still_reported_as_truncated(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"kind":"warning","seq":1,"time":0,"epoch":0,"step":0,"code":"c","message":"\\u001b[2J')
    read = read_events(path)
    assert read.events == [] and read.truncated
