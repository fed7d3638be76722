"""EsperApp(source): themes, stylesheets, the refresh timer, and operator commands to the engine.

The app takes its source as a constructor argument (live, replay or a fixture), drains it on a
timer capped at `refresh` Hz, folds the events through the pure reducer and pushes the state down to
the dashboard. Every command key ends in a notification of the engine's own answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen

from engine.telemetry.safe_text import safe_text
from esper_tui.screens import BlueprintPicker, ConfirmScreen, CrashScreen, DashboardScreen, HelpScreen, QuitScreen
from esper_tui.screens.dashboard import KEYS
from esper_tui.sources import ReplaySource, RunSource
from esper_tui.state import CRASHED, FINISHED, PAUSED, STOPPED, RunState, apply, note_problems
from themes import STYLESHEETS, THEMES, VARIABLE_DEFAULTS, next_theme

ENDED = (FINISHED, STOPPED, CRASHED)
CPU_BUDGET = 0.05  # share of one core the UI may spend drawing before it skips frames
MAX_STALE = 1.0  # ... but the screen is never older than this (seconds)
_KEY_NAMES = {"question_mark": "?", "slash": "/", "full_stop": ".", "equals_sign": "=", "plus": "+", "minus": "-"}


def key_label(keys: str) -> str:
    """"plus,equals_sign" -> "+,=": keys as typed, not by Textual's names."""
    return ",".join(_KEY_NAMES.get(k, k) for k in keys.split(","))


class EsperApp(App[None]):
    """The dashboard for one run. `source` feeds events and takes commands."""

    CSS_PATH = STYLESHEETS
    TITLE = "esper-tui"
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, source: RunSource, *, refresh: float = 4.0, theme: str = "esper-dark",
                 run_dir: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.refresh_hz = max(0.5, min(refresh, 30.0))
        self.state = RunState()
        self.run_dir = run_dir
        self._initial_theme = theme
        self._drawn_version = -1
        self._drawn_status: str | None = None
        self._pending: dict[str, str] = {}  # command id → what the operator asked, awaiting the answer
        self._crash_shown = False
        self.exit_code = 0
        self._drawn_at = float("-inf")
        self._cpu_mark, self._wall_mark = time.process_time(), time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def get_theme_variable_defaults(self) -> dict[str, str]:
        # The stylesheet is parsed before on_mount registers our themes: give its $stage-* variables
        # values under any theme (also a built-in one picked from the command palette).
        return VARIABLE_DEFAULTS

    def on_mount(self) -> None:
        for theme in THEMES.values():
            self.register_theme(theme)
        self.theme = self._initial_theme if self._initial_theme in THEMES else "esper-dark"
        self.push_screen(DashboardScreen())
        self.run_worker(self._start_source, thread=True, name="source", exit_on_error=False)
        self.set_interval(1.0 / self.refresh_hz, self.tick, name="refresh")

    def notify(self, message: str, *, title: str = "", severity: SeverityLevel = "information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Textual's notification, but plain, terminal-safe text unless `markup=True` is asked for.

        What the dashboard notifies about quotes the engine, the log and the socket (a rejection's
        reason, a blueprint name): read as markup, "[@click=...]" there would be an action.
        """
        super().notify(safe_text(message), title=safe_text(title), severity=severity, timeout=timeout,
                       markup=markup)

    def _start_source(self) -> None:
        # The source's own follower thread does the reading and parsing; this worker only starts it
        # off the UI thread, so opening a huge log never blocks the first frame.
        self.source.start()

    def on_unmount(self) -> None:
        self.source.stop()

    @property
    def dashboard(self) -> DashboardScreen:
        return self.get_screen_by_type(DashboardScreen)

    def get_screen_by_type(self, kind: type[Screen]) -> Any:
        for screen in self.screen_stack:
            if isinstance(screen, kind):
                return screen
        raise LookupError(kind.__name__)

    # ------------------------------------------------------------------ the refresh tick
    def tick(self) -> None:
        """Drain new events, reduce, answer pending commands, redraw if anything changed."""
        # Catching up on a long log: keep draining, but give the screen back within ~0.15 s.
        deadline = time.monotonic() + 0.15
        while True:
            batch = self.source.drain()
            for event in batch:
                self.state = apply(self.state, event)  # a new state after a source's Restart
            if not batch or time.monotonic() > deadline:
                break
        note_problems(self.state, self.source.problems, self.source.skipped_lines)
        answered = self._notify_answers()
        status = self.status_override()
        if self.state.version == self._drawn_version and status == self._drawn_status:
            return
        # An engine's answer is drawn in the same frame as its notification: the operator reads the
        # toast, then the log line and the card it refers to, never a screen up to MAX_STALE behind it.
        if self._over_budget(status) and not answered:
            return
        self._drawn_version, self._drawn_status = self.state.version, status
        self._drawn_at = time.monotonic()
        try:
            self.dashboard.show(self.state, status)
        except LookupError:
            return
        if (self.state.status == CRASHED or status == CRASHED) and not self._crash_shown:
            self._show_crash()

    def _over_budget(self, status: str | None) -> bool:
        """Whether to skip this frame to keep the UI's CPU share under `CPU_BUDGET`.

        Training shares the machine (on a 2-vCPU box often one physical core): every frame the UI
        draws is time the engine may lose. When the process used more than its budget since the
        last tick, this frame is skipped, but never for longer than `MAX_STALE` seconds, and never
        when the status changed (paused, finished, crashed show at once). `tick` never skips the
        frame that brings an engine's answer either.
        """
        wall, cpu = time.monotonic(), time.process_time()
        share = (cpu - self._cpu_mark) / max(wall - self._wall_mark, 1e-3)
        self._cpu_mark, self._wall_mark = cpu, wall
        return share > CPU_BUDGET and status == self._drawn_status and wall - self._drawn_at < MAX_STALE

    def status_override(self) -> str | None:
        """The source's word on the status when the log alone cannot tell (DETACHED, CRASHED, REPLAY)."""
        hint = self.source.status_hint()
        if hint == CRASHED or (hint and (hint.startswith("REPLAY") or self.state.status not in ENDED)):
            return hint
        return None

    def _notify_answers(self) -> bool:
        """Notify the engine's answers to the operator's pending commands; whether there were any."""
        answered = [c for c in self._pending if c in self.state.answers]
        for command_id in answered:
            asked = self._pending.pop(command_id)
            answer = self.state.answers[command_id]
            if answer.applied:
                self.notify(f"{asked}: applied", title="engine")
            else:
                self.notify(f"{asked}: rejected: {answer.reason}", title="engine", severity="error", timeout=8)
        return bool(answered)

    def _show_crash(self) -> None:
        self._crash_shown = True
        self.exit_code = 1
        if self.state.failure is not None:
            error_type, message, traceback = self.state.failure
            title = f"{error_type}: {message}"
        else:
            code = self.source.exit_code
            title = f"the engine process died (exit code {code}) without writing run_failed"
            traceback = self.source.stderr_tail()
        self.push_screen(CrashScreen(title, traceback, self.run_dir))

    # ------------------------------------------------------------------ commands
    def command(self, name: str, describe: str | None = None, **fields: Any) -> None:
        """Send one command; its answer arrives later in the log and is shown when it does."""
        if not self.source.can_command:
            self.notify("commands are disabled here (replay or finished run)", severity="warning")
            return
        if self.state.status in ENDED:
            self.notify(f"the run has {self.state.status.lower()}: nothing to steer", severity="warning")
            return
        result = self.source.send(name, **fields)
        asked = describe or " ".join([name, *(str(v) for v in fields.values())])
        if not result.ok:
            self.notify(f"{asked}: not sent: {result.error}", severity="error", timeout=8)
            return
        self._pending[result.command_id] = asked
        self.notify(f"{asked}: sent, waiting for the engine", timeout=2)

    def slot_command(self, name: str, slot: str | None) -> None:
        if slot is None:
            self.notify("no slot selected", severity="warning")
            return
        self.command(name, slot=slot)

    def germinate(self, slot: str | None) -> None:
        if slot is None or not self.source.can_command:
            self.command("germinate")  # reports why nothing can be sent
            return
        blueprints = self.state.blueprints or {}
        if not blueprints:
            self.notify("this run did not list its blueprints", severity="warning")
            return

        def chosen(name: str | None) -> None:
            if name:
                self.command("germinate", slot=slot, blueprint=name)

        self.push_screen(BlueprintPicker(slot, blueprints), chosen)

    def confirm_then(self, question: str, name: str, **fields: Any) -> None:
        if fields.get("slot", "") is None:
            self.notify("no slot selected", severity="warning")
            return

        if not self.source.can_command or self.state.status in ENDED:
            self.command(name, **fields)  # reports why nothing can be sent; no point asking first
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.command(name, **fields)

        self.push_screen(ConfirmScreen(question), answered)

    def pause_resume(self) -> None:
        self.command("resume" if self.state.status == PAUSED else "pause")

    def toggle_autopilot(self) -> None:
        enabled = not bool(self.state.autopilot)
        self.command("autopilot", f"autopilot {'on' if enabled else 'off'}", enabled=enabled)

    def next_theme(self) -> None:
        self.theme = next_theme(self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

    def show_help(self) -> None:
        keys = [(key_label(k), d) for k, _, d, _ in KEYS]
        keys.insert(2, ("1-9", "select slot N"))
        self.push_screen(HelpScreen(keys))

    # ------------------------------------------------------------------ replay
    def replay_source(self) -> ReplaySource | None:
        return self.source if isinstance(self.source, ReplaySource) else None

    def replay_control(self, what: str) -> None:
        """Play/pause, speed, step, jump to start/end: replays only."""
        replay = self.replay_source()
        if replay is None:
            self.notify("replay controls work when replaying a saved log (esper-tui replay RUN_DIR)",
                        severity="warning")
            return
        if what == "toggle":
            replay.toggle()
        elif what in ("faster", "slower"):
            speed = replay.speed or 64.0
            replay.set_speed(min(64.0, speed * 2) if what == "faster" else max(0.25, speed / 2))
        elif what == "step":
            replay.step()
        elif what == "start":
            self._rebuild(replay.seek_start())
        elif what == "end":
            self._rebuild(replay.seek_end())
        self.tick()

    def replay_seek(self, epoch: int) -> None:
        replay = self.replay_source()
        if replay is not None:
            self._rebuild(replay.seek(epoch))
            self.tick()

    def _rebuild(self, events: list) -> None:
        """Start the reduced state afresh from `events` (a seek), through the same reducer."""
        self.state = RunState()
        for event in events:
            apply(self.state, event)
        self._drawn_version = -1

    # ------------------------------------------------------------------ quitting
    def request_quit(self) -> None:
        """Ask whether to stop the run or detach from it (or just leave, if there is no live run)."""
        if not self.source.can_command or self.state.status in ENDED or self.status_override():
            self.exit(return_code=self.exit_code)
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                sent = self.source.send("stop")
                if not sent.ok:
                    self.notify(f"stop: not sent: {sent.error}", severity="error", timeout=8)
                    return
                self.exit(return_code=self.exit_code, message="stopping the run gracefully (checkpoint, then exit)")
            elif choice == "detach":
                where = f" with: esper-tui attach {self.run_dir}" if self.run_dir else ""
                self.exit(return_code=self.exit_code, message=f"detached; the run goes on. Re-attach{where}")

        self.push_screen(QuitScreen(self.run_dir or "RUN_DIR"), chosen)

    def action_quit_now(self) -> None:
        self.exit(return_code=self.exit_code)

    # ------------------------------------------------------------------ command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        board = self.dashboard
        for _keys, action, description, _shown in KEYS:
            if "(" in action:
                continue
            yield SystemCommand(description.capitalize(), f"key: {key_label(_keys)}", getattr(board, f"action_{action}"))

    def action_quit(self) -> None:
        """Textual's own quit (ctrl+q, the palette's "Quit") asks stop-or-detach like `q` does."""
        if not isinstance(self.screen, QuitScreen):
            self.request_quit()
