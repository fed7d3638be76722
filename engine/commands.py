"""Operator commands: one pydantic model per command, their JSON-line wire format, and the parser.

Torch-free and UI-free: the dashboard builds commands with these models, the engine's control
server parses them. Nothing here knows how a command is applied; that is the trainer's business.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from engine.telemetry.safe_text import safe_text

# The server refuses longer lines before parsing, so a client cannot make it buffer without bound.
MAX_LINE_BYTES = 4096

# Names shown on screens and written to logs: printable, single-line, short. Nothing is evaluated,
# but they reach terminals: no C0 control, DEL or C1 control (U+0080-U+009F, the 8-bit forms of ESC
# sequences such as CSI), so no command can carry a terminal escape into the log or onto a screen.
_PRINTABLE = r"^[^\x00-\x1f\x7f-\x9f]+$"
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=_PRINTABLE)
]
Reason = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256, pattern=_PRINTABLE)
]


def new_command_id() -> str:
    """A fresh, unique command id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


class _Command(BaseModel):
    # strict: a wire `"enabled": "yes"` or `"slot": 3` is an error, not silently coerced.
    # extra="forbid": a typo such as "blueprnt" is an error, not an ignored field.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: Name = Field(default_factory=new_command_id)


class _SlotCommand(_Command):
    slot: Name


class PauseCommand(_Command):
    """Pause training at the next safe point."""

    command: Literal["pause"] = "pause"


class ResumeCommand(_Command):
    """Resume a paused run."""

    command: Literal["resume"] = "resume"


class StepEpochCommand(_Command):
    """While paused, train exactly one more epoch, then pause again."""

    command: Literal["step_epoch"] = "step_epoch"


class StopCommand(_Command):
    """Stop gracefully: finish the step, flush the log, checkpoint."""

    command: Literal["stop"] = "stop"


class GerminateCommand(_SlotCommand):
    """Germinate a seed built from `blueprint` into the dormant `slot`."""

    command: Literal["germinate"] = "germinate"
    blueprint: Name


class AdvanceCommand(_SlotCommand):
    """Move the slot's seed to its next stage through that edge's gate."""

    command: Literal["advance"] = "advance"


class ForceAdvanceCommand(_SlotCommand):
    """Move the slot's seed to its next stage even if the gate fails (recorded as forced)."""

    command: Literal["force_advance"] = "force_advance"


class FossilizeCommand(_SlotCommand):
    """Fossilize the slot's seed (through G5)."""

    command: Literal["fossilize"] = "fossilize"


class CullCommand(_SlotCommand):
    """Cull the slot's seed, with a reason recorded in the log."""

    command: Literal["cull"] = "cull"
    reason: Reason = "operator cull"


class AutopilotCommand(_Command):
    """Turn the heuristic controller on or off."""

    command: Literal["autopilot"] = "autopilot"
    enabled: bool


class SetLrCommand(_Command):
    """Set the host learning rate (positive and finite)."""

    command: Literal["set_lr"] = "set_lr"
    value: float = Field(gt=0, allow_inf_nan=False)


Command = Annotated[
    Union[
        PauseCommand,
        ResumeCommand,
        StepEpochCommand,
        StopCommand,
        GerminateCommand,
        AdvanceCommand,
        ForceAdvanceCommand,
        FossilizeCommand,
        CullCommand,
        AutopilotCommand,
        SetLrCommand,
    ],
    Field(discriminator="command"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)

# Wire names in the order of SPEC §5 (help screens list them this way).
COMMAND_NAMES: tuple[str, ...] = (
    "pause",
    "resume",
    "step_epoch",
    "stop",
    "germinate",
    "advance",
    "force_advance",
    "fossilize",
    "cull",
    "autopilot",
    "set_lr",
)
# Commands that name a slot; the trainer rejects them with "unknown slot" when it does not exist.
SLOT_COMMANDS: frozenset[str] = frozenset({"germinate", "advance", "force_advance", "fossilize", "cull"})


class CommandError(ValueError):
    """A command line or payload that is not a valid command. `command_id` is set when readable."""

    def __init__(self, message: str, command_id: str | None = None) -> None:
        super().__init__(message)
        self.command_id = command_id


def _valid_names() -> str:
    return "valid commands: " + ", ".join(COMMAND_NAMES)


def _condense(exc: ValidationError) -> str:
    """One readable line from pydantic's errors: `field: why; field: why`."""
    parts = []
    for err in exc.errors(include_url=False):
        # The discriminated union prefixes each location with the tag; the operator knows which
        # command they sent, so keep only the field path.
        loc = [str(p) for p in err["loc"]]
        if loc and loc[0] in COMMAND_NAMES:
            loc = loc[1:]
        field = ".".join(loc) or "command"
        kind = err["type"]
        if kind == "missing":
            why = "required field is missing"
        elif kind == "extra_forbidden":
            why = "unknown field"
        elif kind == "string_pattern_mismatch":
            why = "must be printable text on one line"
        else:
            why = err["msg"][:1].lower() + err["msg"][1:]
        parts.append(f"{field}: {why}")
    return "; ".join(parts)


def _validate(obj: dict[str, Any]) -> Command:
    raw_id = obj.get("id")
    # Echoed in the error reply so the client can match it; an invalid id may hold anything, so it is
    # echoed terminal-safe and short (a valid one is unchanged).
    command_id = safe_text(raw_id[:64]) if isinstance(raw_id, str) and raw_id else None
    name = obj.get("command")
    if name is None:
        raise CommandError(f'malformed command: missing "command"; {_valid_names()}', command_id)
    if not isinstance(name, str) or name not in COMMAND_NAMES:
        shown = name if isinstance(name, str) else json.dumps(name)
        raise CommandError(f"unknown command '{safe_text(shown[:64])}'; {_valid_names()}", command_id)
    try:
        return COMMAND_ADAPTER.validate_python(obj)
    except ValidationError as exc:
        raise CommandError(f"invalid {name} command: {_condense(exc)}", command_id) from None


def parse_command(line: str | bytes) -> Command:
    """Parse one wire line (a JSON object) into a command; a missing `id` gets a fresh one.

    Raises `CommandError` with a one-line, human-readable message for anything else.
    """
    if isinstance(line, (bytes, bytearray)):
        if len(line) > MAX_LINE_BYTES:
            raise CommandError(f"malformed command: line is longer than {MAX_LINE_BYTES} bytes")
        try:
            line = bytes(line).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CommandError(f"malformed command: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    elif len(line.encode("utf-8", "surrogatepass")) > MAX_LINE_BYTES:
        raise CommandError(f"malformed command: line is longer than {MAX_LINE_BYTES} bytes")
    text = line.strip()
    if not text:
        raise CommandError("malformed command: empty line")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"malformed command: not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise CommandError("malformed command: not JSON (nested too deeply)") from None
    if not isinstance(obj, dict):
        raise CommandError(f"malformed command: expected a JSON object, got {_json_kind(obj)}")
    return _validate(obj)


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "an array"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, bool):
        return "a boolean"
    if obj is None:
        return "null"
    if isinstance(obj, float) and not math.isfinite(obj):
        return "a non-finite number"
    return "a number"


def new_command(name: str, **fields: Any) -> Command:
    """Build and validate a command by wire name, assigning a fresh id unless `id=` is given."""
    return _validate({"command": name, **fields})


def command_to_wire(cmd: Command) -> dict[str, Any]:
    """The command as a JSON-ready dict (what goes on the socket and into events): id and command first."""
    data = cmd.model_dump(mode="json")
    return {"id": data.pop("id"), "command": data.pop("command"), **data}


__all__ = [
    "COMMAND_ADAPTER",
    "COMMAND_NAMES",
    "MAX_LINE_BYTES",
    "SLOT_COMMANDS",
    "AdvanceCommand",
    "AutopilotCommand",
    "Command",
    "CommandError",
    "CullCommand",
    "ForceAdvanceCommand",
    "FossilizeCommand",
    "GerminateCommand",
    "PauseCommand",
    "ResumeCommand",
    "SetLrCommand",
    "StepEpochCommand",
    "StopCommand",
    "command_to_wire",
    "new_command",
    "new_command_id",
    "parse_command",
]
