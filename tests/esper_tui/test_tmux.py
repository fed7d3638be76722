"""The dashboard in a real terminal (tmux at 80×24), driven by keys as an operator drives it.

Pilot tests talk to the app from inside; these start `esper-tui train` as a user does, in a private
tmux server, press keys with `send-keys`, read the screen with `capture-pane` and check the run log.
Needs tmux (part of this machine kind; `apt-get install tmux` elsewhere).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

ESPER_TUI = Path(sys.executable).parent / "esper-tui"


class Terminal:
    """One tmux session on a server of its own (never the user's), 80×24."""

    def __init__(self, tmp: Path, argv: list[str]) -> None:
        if shutil.which("tmux") is None:
            pytest.fail("these tests drive the dashboard in tmux, which is not installed (apt-get install tmux)")
        self.socket = f"esper-test-{os.getpid()}-{time.monotonic_ns()}"
        self._tmux("new-session", "-d", "-s", "t", "-x", "80", "-y", "24", "-c", str(tmp), *argv)

    def _tmux(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        return out.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t")

    def press(self, key: str) -> None:
        self._tmux("send-keys", "-t", "t", key)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)


def events(run_dir: Path) -> list[dict]:
    try:
        lines = (run_dir / "events.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.endswith("}")]


def wait(what: str, check: Callable[[], object], term: Terminal, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; the screen:\n{term.screen()}")


def test_n_steps_exactly_one_epoch_per_press_then_pauses_again(tmp_path):
    run_dir = tmp_path / "run"
    term = Terminal(tmp_path, [str(ESPER_TUI), "train", "--epochs", "40", "--pace", "0.3", "--no-autopilot",
                               "--run-dir", str(run_dir)])
    try:
        wait("epoch 2 on screen", lambda: any(f"epoch {n}/40" in term.screen() for n in range(2, 40)), term)
        term.press("p")
        paused = wait("the pause in the log", lambda: [e for e in events(run_dir) if e["kind"] == "run_paused"], term)
        wait("PAUSED in the header", lambda: "PAUSED" in term.screen().splitlines()[0], term)
        for press in range(1, 3):
            done_before = [e["epoch"] for e in events(run_dir) if e["kind"] == "epoch_completed"]
            term.press("n")
            # The first press already counts (it used to report "applied" and do nothing).
            pauses = wait(f"the pause after n #{press}",
                          lambda: [e for e in events(run_dir) if e["kind"] == "run_paused"][len(paused):], term)
            log = events(run_dir)
            stepped = [e["epoch"] for e in log if e["kind"] == "epoch_completed"][len(done_before):]
            assert len(stepped) == 1, f"n #{press} ran epochs {stepped}"
            assert pauses[0]["cause"] == "step_epoch" and pauses[0]["epoch"] == stepped[0]
            paused += pauses
            epoch = stepped[0]
            wait(f"epoch {epoch} PAUSED on screen",
                 lambda: f"epoch {epoch}/40" in (head := term.screen().splitlines()[0]) and "PAUSED" in head, term)
            time.sleep(1.0)  # still paused a while later: no epoch beyond the one asked for
            assert [e["epoch"] for e in events(run_dir) if e["kind"] == "epoch_completed"][-1] == epoch
        term.press("q")
        wait("the quit dialog", lambda: "Stop (s)" in term.screen(), term)
        term.press("s")
        finished = wait("run_finished", lambda: [e for e in events(run_dir) if e["kind"] == "run_finished"], term)
        assert finished[0]["status"] == "stopped"
    finally:
        term.close()
