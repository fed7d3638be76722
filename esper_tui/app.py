"""EsperApp(source): themes, stylesheets, the refresh timer, and the one place operator commands leave.

The app takes its source as a constructor argument (live, replay or a fixture), drains it on a
timer capped at `refresh` Hz, folds the events through the pure reducer and pushes the state, the
typed status and the operator's controls down to the dashboard. Screens post `CommandRequested`;
the app sends it from a worker thread (a socket round trip never blocks the UI) and shows one toast
per command: the engine's answer, and another only when the engine moves that slot on its own
right after.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable
from typing import Any

from textual import on
from textual.app import App, SystemCommand
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.worker import get_current_worker

from engine.telemetry.safe_text import safe_text
from esper_tui.answers import CommandDesk
from esper_tui.keys import KEYS, help_rows, key_for
from esper_tui.messages import CommandRequest, CommandRequested, CommandSent, SeekRequested
from esper_tui.replay import ReplaySource
from esper_tui.screens import CrashScreen, DashboardScreen, HelpScreen, QuitScreen
from esper_tui.sources import RunSource
from esper_tui.timeline import marks_of
from esper_tui.state import CRASHED, FINISHED, STOPPED, RunState, apply, note_problems
from esper_tui.status import Controls, Status
from themes import STYLESHEETS, THEMES, VARIABLE_DEFAULTS, next_theme

ENDED = (FINISHED, STOPPED, CRASHED)
CPU_BUDGET = 0.05  # share of one core the UI may spend drawing before it skips frames
MAX_STALE = 1.0  # ... but the screen is never older than this (seconds)
SENDER_POLL = 0.1  # the sender thread's wait for the next command: short, so app exit never waits on it
NOT_STEERABLE = "commands are disabled here (replay or finished run)"


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
        self.desk = CommandDesk()
        self._initial_theme = theme
        self._drawn: tuple[int, Status | None, Controls] | None = None
        self._drawn_status: Status | None = None
        self._outbox: queue.SimpleQueue[CommandRequest] = queue.SimpleQueue()
        self._stop_request: CommandRequest | None = None  # the quit dialog's "stop": exit once it is sent
        self._crash_shown = False
        self.exit_code = 0
        self._marks: tuple | None = None  # a replay's timeline marks, computed once it is loaded
        self.fork_epoch: int | None = None  # a replay's `F`: the epoch to fork a live run at, once it exits
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
        self.push_screen(DashboardScreen(replaying=self.replay_source() is not None))
        self.run_worker(self._start_source, thread=True, name="source", exit_on_error=False)
        self.run_worker(self._send_commands, thread=True, name="sender", exit_on_error=False)
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
        """The dashboard screen, wherever it is in the stack (LookupError before it is pushed)."""
        return self.get_screen_by_type(DashboardScreen)

    def get_screen_by_type(self, kind: type[Screen]) -> Any:
        """The first screen of the stack that is a `kind`; LookupError if there is none."""
        for screen in self.screen_stack:
            if isinstance(screen, kind):
                return screen
        raise LookupError(kind.__name__)

    # ------------------------------------------------------------------ the refresh tick
    def tick(self) -> None:
        """Drain new events, reduce, tell the operator what their commands did, redraw if anything changed."""
        # Catching up on a long log: keep draining, but give the screen back within ~0.15 s.
        deadline = time.monotonic() + 0.15
        while True:
            batch = self.source.drain()
            for event in batch:
                self.state = apply(self.state, event)  # a new state after a source's Restart
                self.desk.see(event)
            if not batch or time.monotonic() > deadline:
                break
        note_problems(self.state, self.source.problems, self.source.skipped_lines)
        replay = self.replay_source()
        if replay is not None:  # the header counts to the log's real last epoch, not the planned one
            self.state.log_last_epoch = replay.last_epoch if replay.loaded else None
            if replay.loaded and self._marks is None:
                self._marks = marks_of(replay.events)  # once: the whole log's lifecycle marks
            self.state.timeline = self._marks or ()
        notices = self.desk.take(self.state)
        for notice in notices:
            self.notify(notice.message, severity=notice.severity, timeout=notice.timeout)
        status = self.status_override()
        controls = self.controls()
        drawn = (self.state.version, status, controls)
        if drawn == self._drawn:
            return
        # An engine's answer is drawn in the same frame as its toast: the operator reads the toast,
        # then the log line and the card it refers to, never a screen up to MAX_STALE behind it.
        over_budget = self._over_budget(status)
        if over_budget and not notices and self._drawn is not None and controls == self._drawn[2]:
            return
        self._drawn, self._drawn_status = drawn, status
        self._drawn_at = time.monotonic()
        try:
            self.dashboard.show(self.state, status, controls)
        except LookupError:
            return
        if (self.state.status == CRASHED or (status is not None and status.word == CRASHED)) and not self._crash_shown:
            self._show_crash()

    def _over_budget(self, status: Status | str | None) -> bool:
        """Whether to skip this frame to keep the UI's CPU share under `CPU_BUDGET`.

        Training shares the machine (on a 2-vCPU box often one physical core): every frame the UI
        draws is time the engine may lose. When the process used more than its budget since the
        last tick, this frame is skipped, but never for longer than `MAX_STALE` seconds, and never
        when the status changed (paused, finished, crashed show at once). `tick` never skips the
        frame that brings an engine's answer, nor one that says a command is on its way.
        """
        wall, cpu = time.monotonic(), time.process_time()
        share = (cpu - self._cpu_mark) / max(wall - self._wall_mark, 1e-3)
        self._cpu_mark, self._wall_mark = cpu, wall
        return share > CPU_BUDGET and status == self._drawn_status and wall - self._drawn_at < MAX_STALE

    def status_override(self) -> Status | None:
        """The status when the log alone cannot tell: a replay's (speed, paused, at the end), or the
        source's word (DETACHED, CRASHED) while the log has not ended the run."""
        replay = self.replay_source()
        if replay is not None:
            return Status.replay(playing=replay.playing, speed=replay.speed, at_end=replay.at_end,
                                 ending=replay.ending)
        hint = self.source.status_hint()
        if hint and (hint == CRASHED or self.state.status not in ENDED):
            return Status(hint)  # a bare word: LiveSource's hints carry no payload
        return None

    def controls(self) -> Controls:
        """What the operator can do now, for the dashboard to offer (or explain)."""
        return Controls(steerable=self._why_not_steerable() is None, replaying=self.replay_source() is not None,
                        pending=self.desk.pending)

    def _why_not_steerable(self) -> str | None:
        if not self.source.can_command:
            return NOT_STEERABLE
        if self.state.status in ENDED:
            return f"the run has {self.state.status.lower()}: nothing to steer"
        return None

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

    # ------------------------------------------------------------------ commands (messages up)
    @on(CommandRequested)
    def _command_requested(self, message: CommandRequested) -> None:
        """Every operator command passes here: refused with the reason, or queued for the sender."""
        why = self._why_not_steerable()
        if why is not None:
            self.notify(why, severity="warning")
            return
        self._send(message.request)

    def _send(self, request: CommandRequest) -> None:
        self.desk.queued(request)
        self._outbox.put(request)
        self.tick()  # "sending …" shows now, not at the next refresh

    def _send_commands(self) -> None:
        """The sender thread: one command at a time, in the order asked (a step_epoch must not
        overtake the pause before it), each reply posted back as a CommandSent message."""
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                request = self._outbox.get(timeout=SENDER_POLL)
            except queue.Empty:
                continue
            result = self.source.send(request.command, **request.fields)
            self.post_message(CommandSent(request, result))

    @on(CommandSent)
    def _command_sent(self, message: CommandSent) -> None:
        self.desk.sent(message.request, message.result)
        if message.request is self._stop_request:
            self._stop_request = None
            if message.result.ok:
                self.exit(return_code=self.exit_code, message="stopping the run gracefully (checkpoint, then exit)")
                return
        self.tick()

    # ------------------------------------------------------------------ the app's own actions (keys.KEYS)
    def action_next_theme(self) -> None:
        """`t`: the next of our themes."""
        self.theme = next_theme(self.theme)
        self.notify(f"theme: {self.theme}", timeout=2)

    def action_help(self) -> None:
        """`?`: the guide (with this run's gate thresholds) and the keys, from the same table as the bindings."""
        self.push_screen(HelpScreen(help_rows(), config=self.state.config))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The replay keys work (and show in the footer) only in a replay."""
        key = key_for(action)
        return key is None or key.offered(self.replay_source() is not None)

    def action_replay(self, what: str) -> None:
        """Play/pause, speed, step, jump to start/end: replays only."""
        replay = self.replay_source()
        if replay is None:  # check_action keeps the replay keys off a live run
            return
        if what == "toggle":
            replay.toggle()
        elif what in ("faster", "slower"):
            speed = replay.speed or 64.0
            replay.set_speed(min(64.0, speed * 2) if what == "faster" else max(0.25, speed / 2))
        elif what == "step":
            replay.step()
        elif what == "step_event":
            replay.step_event()
        elif what == "start":
            self._rebuild(replay.seek_start())
        elif what == "end":
            self._rebuild(replay.seek_end())
        self.tick()

    def action_fork(self) -> None:
        """`F` (replay): leave the replay and start a live run forked from the epoch on screen."""
        epoch = self.state.epoch
        if epoch < 1:
            self.notify("play the replay to an epoch first: a fork starts from a completed epoch", severity="warning")
            return
        self.fork_epoch = epoch
        self.exit(return_code=0, message=f"forking a live run at epoch {epoch} (its nearest kept checkpoint)")

    @on(SeekRequested)
    def _seek_requested(self, message: SeekRequested) -> None:
        replay = self.replay_source()
        if replay is not None:
            self._rebuild(replay.seek(message.epoch))
            self.tick()

    def replay_source(self) -> ReplaySource | None:
        """The source, when it is a replay (the replay keys drive it)."""
        return self.source if isinstance(self.source, ReplaySource) else None

    def _rebuild(self, events: list) -> None:
        """Start the reduced state afresh from `events` (a seek), through the same reducer."""
        self.state = RunState()
        for event in events:
            apply(self.state, event)
        self._drawn = None

    # ------------------------------------------------------------------ quitting
    def action_request_quit(self) -> None:
        """`q`: ask whether to stop the run or detach from it (or just leave, if there is no live run)."""
        if self._why_not_steerable() is not None or self.status_override() is not None:
            self.exit(return_code=self.exit_code)
            return

        def chosen(choice: str | None) -> None:
            if choice == "stop":
                self._stop_request = CommandRequest("stop")
                self._send(self._stop_request)  # exits once the engine has it; a failure is a toast
            elif choice == "detach":
                where = f" with: esper-tui attach {self.run_dir}" if self.run_dir else ""
                self.exit(return_code=self.exit_code, message=f"detached; the run goes on. Re-attach{where}")

        self.push_screen(QuitScreen(self.run_dir or "RUN_DIR"), chosen)

    def action_quit(self) -> None:
        """Textual's own quit (ctrl+q, the palette's "Quit") asks stop-or-detach like `q` does."""
        if not isinstance(self.screen, QuitScreen):
            self.action_request_quit()

    def action_quit_now(self) -> None:
        """Leave at once (the crash screen's `q`)."""
        self.exit(return_code=self.exit_code)

    # ------------------------------------------------------------------ command palette
    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """Textual's commands, then every dashboard key by name ("Germinate", key: g)."""
        yield from super().get_system_commands(screen)
        try:
            board = self.dashboard
        except LookupError:
            return
        replaying = self.replay_source() is not None
        for key in KEYS:
            if key.in_palette and key.offered(replaying):
                yield SystemCommand(key.help_text.capitalize(), f"key: {key.label}",
                                    self._palette_action(key.action, board))

    def _palette_action(self, action: str, board: DashboardScreen) -> Any:
        async def run() -> None:
            await self.run_action(action, board)  # "app.help" runs here, "germinate" on the dashboard

        return run
