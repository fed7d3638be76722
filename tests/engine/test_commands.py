"""Operator command models and the wire parser: every command parses, every bad line says why."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.commands import (
    COMMAND_ADAPTER,
    COMMAND_NAMES,
    MAX_LINE_BYTES,
    SLOT_COMMANDS,
    AutopilotCommand,
    CommandError,
    CullCommand,
    GerminateCommand,
    SetLrCommand,
    command_to_wire,
    new_command,
    parse_command,
)

ROOT = Path(__file__).resolve().parents[2]

VALID = {
    "pause": {},
    "resume": {},
    "step_epoch": {},
    "stop": {},
    "germinate": {"slot": "block1", "blueprint": "conv_light"},
    "advance": {"slot": "block1"},
    "force_advance": {"slot": "block1"},
    "fossilize": {"slot": "block1"},
    "cull": {"slot": "block1", "reason": "too slow"},
    "autopilot": {"enabled": False},
    "set_lr": {"value": 0.01},
}


def line(**obj):
    return json.dumps(obj)


def test_valid_table_covers_every_command():
    assert set(VALID) == set(COMMAND_NAMES)
    assert SLOT_COMMANDS <= set(COMMAND_NAMES)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_each_command_parses_and_round_trips(name):
    cmd = parse_command(line(id="c1", command=name, **VALID[name]))
    assert cmd.command == name and cmd.id == "c1"
    wire = command_to_wire(cmd)
    assert wire == {"id": "c1", "command": name, **VALID[name]}
    assert list(wire)[:2] == ["id", "command"]
    assert parse_command(json.dumps(wire)) == cmd
    assert hasattr(cmd, "slot") == (name in SLOT_COMMANDS)


def test_bytes_and_trailing_newline_are_accepted():
    cmd = parse_command(b'{"id": "c2", "command": "germinate", "slot": "block1", "blueprint": "conv_light"}\r\n')
    assert isinstance(cmd, GerminateCommand)
    assert (cmd.slot, cmd.blueprint) == ("block1", "conv_light")


def test_missing_id_gets_a_fresh_unique_one():
    a, b = parse_command('{"command": "pause"}'), parse_command('{"command": "pause"}')
    assert a.id and b.id and a.id != b.id
    assert new_command("stop").id != new_command("stop").id
    assert new_command("stop", id="mine").id == "mine"


def test_cull_has_a_default_reason():
    cmd = parse_command('{"command": "cull", "slot": "block2"}')
    assert isinstance(cmd, CullCommand) and cmd.reason == "operator cull"


def test_new_command_validates_like_the_wire():
    assert isinstance(new_command("set_lr", value=1e-3), SetLrCommand)
    assert isinstance(new_command("autopilot", enabled=True), AutopilotCommand)
    with pytest.raises(CommandError, match="slot"):
        new_command("advance")
    with pytest.raises(CommandError, match="valid commands"):
        new_command("explode")


def test_unknown_command_lists_the_valid_names():
    with pytest.raises(CommandError) as info:
        parse_command('{"id": "x9", "command": "explode"}')
    msg = str(info.value)
    assert "unknown command 'explode'" in msg
    assert all(name in msg for name in COMMAND_NAMES)
    assert info.value.command_id == "x9"


def test_missing_command_lists_the_valid_names():
    for text in ('{}', '{"slot": "block1"}'):
        with pytest.raises(CommandError, match='missing "command".*valid commands: pause, resume'):
            parse_command(text)


def test_extra_field_is_rejected_naming_it():
    with pytest.raises(CommandError) as info:
        parse_command(line(id="t1", command="germinate", slot="block1", blueprnt="conv_light"))
    msg = str(info.value)
    assert msg.startswith("invalid germinate command:")
    assert "blueprnt: unknown field" in msg and "blueprint: required field is missing" in msg
    assert info.value.command_id == "t1"


@pytest.mark.parametrize("value", [0, -0.1, "NaN", "Infinity", "-Infinity", 1e400])
def test_set_lr_must_be_positive_and_finite(value):
    text = '{"command": "set_lr", "value": %s}' % (value if isinstance(value, str) else json.dumps(value))
    with pytest.raises(CommandError, match="value: "):
        parse_command(text)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"command": "set_lr", "value": "0.1"}', "value"),
        ('{"command": "set_lr", "value": true}', "value"),
        ('{"command": "autopilot", "enabled": "yes"}', "enabled"),
        ('{"command": "autopilot", "enabled": 1}', "enabled"),
        ('{"command": "autopilot"}', "enabled"),
        ('{"command": "advance", "slot": 3}', "slot"),
        ('{"command": "advance", "slot": ""}', "slot"),
        ('{"command": "advance", "slot": "   "}', "slot"),
        ('{"command": "advance", "slot": "a\\nb"}', "slot"),
        ('{"command": "germinate", "slot": "s", "blueprint": "%s"}' % ("x" * 65), "blueprint"),
        ('{"command": "pause", "id": 5}', "id"),
        ('{"command": "cull", "slot": "s", "reason": null}', "reason"),
    ],
)
def test_bad_field_types_name_the_field(text, field):
    with pytest.raises(CommandError) as info:
        parse_command(text)
    msg = str(info.value)
    assert f"{field}: " in msg
    assert "\n" not in msg  # condensed to one line


def test_set_lr_accepts_an_integer():
    assert parse_command('{"command": "set_lr", "value": 1}').value == 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("not json", "malformed command: not JSON ("),
        ('{"command": "pause"', "malformed command: not JSON ("),
        ("", "malformed command: empty line"),
        ("   \n", "malformed command: empty line"),
        ('["pause"]', "expected a JSON object, got an array"),
        ('"pause"', "expected a JSON object, got a string"),
        ("42", "expected a JSON object, got a number"),
        ("null", "expected a JSON object, got null"),
        ('{"command": 7}', "unknown command '7'"),
        ('{"command": ["pause"]}', "unknown command"),
    ],
)
def test_malformed_lines_get_readable_messages(text, expected):
    with pytest.raises(CommandError) as info:
        parse_command(text)
    assert expected in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_utf8_and_deep_nesting_and_long_lines_are_command_errors():
    with pytest.raises(CommandError, match="not UTF-8"):
        parse_command(b"\xff\xfe{}")
    with pytest.raises(CommandError, match="malformed command"):
        parse_command("[" * 100_000)
    with pytest.raises(CommandError, match=f"longer than {MAX_LINE_BYTES} bytes"):
        parse_command(line(command="cull", slot="s", reason="x" * MAX_LINE_BYTES))


def test_adapter_is_a_discriminated_union():
    cmd = COMMAND_ADAPTER.validate_json('{"command": "germinate", "slot": "a", "blueprint": "b"}')
    assert isinstance(cmd, GerminateCommand)
    assert COMMAND_ADAPTER.json_schema()["discriminator"]["propertyName"] == "command"


def test_commands_are_immutable():
    cmd = new_command("advance", slot="block1")
    with pytest.raises(Exception):
        cmd.slot = "block2"


def test_commands_and_control_import_without_torch():
    code = "import sys, engine.commands, engine.control; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
