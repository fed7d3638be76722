"""What watching costs the training: engine throughput with the dashboard attached vs. headless.

Not a test. Side by side in one run, in alternating rounds (the order swaps every round), it trains
the same run twice per round, with identical options (same task, epochs and seed, so the same seed
lifecycle and the same work):

  headless  `python -m engine train --run-dir D --quiet OPTIONS` as a plain subprocess (no terminal);
  attached  `esper-tui train --run-dir D OPTIONS` inside a private tmux server, in a 120x40 window, so
            the real dashboard draws at its real refresh rate (4 Hz by default). Once the log says
            `run_finished`, the bench presses `q` (a finished run quits at once) and ends the tmux server.

Throughput is the engine's own, read from each run's log: the training samples of every epoch after
the warm-up epochs (samples_per_s x epoch_time_s) over the sum of their epoch_time_s. The summary
keeps the median of the rounds for each side; ratio = attached / headless (target >= 0.97).

While a run trains, the bench polls /proc/PID/stat (utime + stime, every --poll seconds) of the
dashboard process (the tmux pane's process) and of the engine process, and reports their CPU time
as a share of one core: during training (first epoch_completed -> run_finished in the log) and over
the run (launch -> run_finished, dashboard start-up included); and the tmux server's share while
training (it parses what the dashboard draws, as a terminal emulator would).
Columns: wall s = launch -> run_finished; train s = first epoch -> run_finished (as polled);
samples/s = the run's throughput as above; median = median of its per-epoch samples_per_s; CPU% =
% of one core while training (UI steady: over the second half of the epochs, when the dashboard's
start-up, which lands in the first epochs of a run this fast, is long over; target < 8%; UI CPU% run:
from launch). It also checks that both sides ran
the same configuration and ended with the same final metrics, and that the dashboard drew.

The last line reads `throughput ratio: X`. Needs tmux and Linux /proc.

Usage: python bench/ui_impact.py [--rounds 5] [--epochs 60] [--seed 0] [--warmup-epochs 2]
                                 [--refresh 4] [--poll 0.2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.97  # issue 9: throughput with the dashboard attached, vs headless
UI_TARGET = 8.0  # issue 9: % of one core the dashboard may use at 4 Hz, once drawing (steady)
TICKS = os.sysconf("SC_CLK_TCK")
COLS, ROWS = 120, 40


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="rounds; each trains once headless and once attached")
    p.add_argument("--epochs", type=int, default=60, help="epochs per run (default task: digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warmup-epochs", type=int, default=2, help="first epochs of each run left out of throughput")
    p.add_argument("--refresh", type=float, default=4.0, help="dashboard refreshes per second (esper-tui --refresh)")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between log / CPU polls (both sides)")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per run")
    p.add_argument("--keep", action="store_true", help="keep the run directories (printed) instead of deleting them")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- /proc
def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a live process, in seconds (all its threads); None once it is gone."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / TICKS


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2:].split()[1])


def children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read().decode()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2:].split()[1]) == pid:
            kids.append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return False
    return text[text.rindex(")") + 2] != "Z"


# ---------------------------------------------------------------------------- the run log
class LogTail:
    """Reads complete new lines of RUN_DIR/events.jsonl as they are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.partial = b""
        self.events: list[dict] = []

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        new = [json.loads(line) for line in lines if line.strip()]
        self.events += new
        return new


@dataclass
class Result:
    side: str
    run_dir: Path
    wall_s: float = 0.0  # launch -> run_finished seen
    train_wall_s: float = 0.0  # first epoch_completed seen -> run_finished seen
    epochs: list[dict] = field(default_factory=list)
    config: dict | None = None
    final: dict | None = None
    cpu_run: dict[str, float] = field(default_factory=dict)  # CPU seconds per process, launch -> run_finished
    cpu_train: dict[str, float] = field(default_factory=dict)  # ... first epoch -> run_finished
    steady_wall_s: float = 0.0  # the second half of the epochs: the epoch `steady_from` seen -> run_finished
    cpu_steady: dict[str, float] = field(default_factory=dict)  # ... over the same span
    drawn: bool | None = None
    ui_exit: str = ""

    def throughput(self, warmup: int) -> tuple[float, float]:
        """(sum of samples / sum of epoch time, median of per-epoch samples/s) over epochs after warm-up."""
        kept = [e for e in self.epochs if e["epoch"] > warmup]
        samples = sum(e["samples_per_s"] * e["epoch_time_s"] for e in kept)
        seconds = sum(e["epoch_time_s"] for e in kept)
        return samples / seconds, statistics.median(e["samples_per_s"] for e in kept)

    def share_train(self, name: str) -> float | None:
        """% of one core the process used while training."""
        return pct(self.cpu_train.get(name), self.train_wall_s)

    def share_steady(self, name: str) -> float | None:
        """% of one core the process used over the second half of the training (start-up long over)."""
        return pct(self.cpu_steady.get(name), self.steady_wall_s)

    def share_run(self, name: str) -> float | None:
        """% of one core the process used from launch to run_finished."""
        return pct(self.cpu_run.get(name), self.wall_s)


class RunFailed(RuntimeError):
    pass


def follow(result: Result, t0: float, watched: dict[str, int], find_engine: Callable[[], int | None],
           poll: float, timeout: float, steady_from: int) -> None:
    """Poll the log and the processes' CPU until run_finished; fill in result's timings and CPU times.

    `watched`: name -> pid of processes started at t0 (the dashboard, the tmux server); the engine
    ("engine") is looked up with `find_engine` until it exists. The last value read is kept per process.
    The steady span starts when epoch `steady_from` is seen.
    """
    tail = LogTail(result.run_dir / "events.jsonl")
    pids: dict[str, int] = dict(watched)
    last: dict[str, float] = {}
    train_start: tuple[float, dict[str, float]] | None = None
    steady_start: tuple[float, dict[str, float]] | None = None
    engine_dead = False
    deadline = t0 + timeout
    while True:
        time.sleep(poll)
        if "engine" not in pids and (pid := find_engine()) is not None:
            pids["engine"] = pid
        now = time.monotonic()
        # Sample CPU first, then read the log: a run_finished read now ended before this sample.
        for name, pid in pids.items():
            if (cpu := cpu_seconds(pid)) is not None:
                last[name] = cpu
        for event in tail.poll():
            kind = event.get("kind")
            if kind == "run_started":
                result.config = event.get("config")
            elif kind == "epoch_completed":
                result.epochs.append(event)
                if train_start is None:
                    train_start = (now, dict(last))
                if steady_start is None and event.get("epoch", 0) >= steady_from:
                    steady_start = (now, dict(last))
            elif kind == "run_failed":
                raise RunFailed(f"{result.side} run failed: {event.get('error_type')}: {event.get('message')}")
            elif kind == "run_finished":
                result.final = event.get("final")
                result.wall_s = now - t0
                result.cpu_run = dict(last)
                if train_start is not None:
                    result.train_wall_s = now - train_start[0]
                    result.cpu_train = {name: last[name] - train_start[1][name]
                                        for name in last if name in train_start[1]}
                if steady_start is not None:
                    result.steady_wall_s = now - steady_start[0]
                    result.cpu_steady = {name: last[name] - steady_start[1][name]
                                         for name in last if name in steady_start[1]}
                return
        if now > deadline:
            raise RunFailed(f"{result.side} run: no run_finished in {timeout:.0f} s ({result.run_dir})")
        if "ui" in pids and not alive(pids["ui"]) and "engine" not in pids:
            raise RunFailed(f"the dashboard exited before the engine started ({result.run_dir})")
        # Dead since the last poll, yet this poll's read of the log had no run_finished: it never will.
        if engine_dead:
            raise RunFailed(f"{result.side}: the engine exited without run_finished ({result.run_dir})")
        engine_dead = "engine" in pids and not alive(pids["engine"])


# ---------------------------------------------------------------------------- the two sides
def engine_options(args: argparse.Namespace) -> list[str]:
    # Explicit options turn off the bare `esper-tui` demo pacing; min_epoch_seconds=0 makes sure of it.
    return ["--epochs", str(args.epochs), "--seed", str(args.seed), "--set", "min_epoch_seconds=0"]


def steady_from(args: argparse.Namespace) -> int:
    """The first epoch of the steady span: half-way through the run (the dashboard's start-up, which
    lands in the first epochs of a fast run, is long over), and never within the warm-up."""
    return max(args.warmup_epochs + 1, args.epochs // 2)


def run_headless(run_dir: Path, args: argparse.Namespace) -> Result:
    result = Result("headless", run_dir)
    argv = [sys.executable, "-m", "engine", "train", "--run-dir", str(run_dir), "--quiet", *engine_options(args)]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        follow(result, t0, {}, lambda: proc.pid, args.poll, args.timeout, steady_from(args))
        _, err = proc.communicate(timeout=30)
        if proc.returncode != 0:
            raise RunFailed(f"headless engine exited {proc.returncode}: {err.decode()[-2000:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return result


def esper_tui_argv() -> list[str]:
    script = Path(sys.executable).parent / "esper-tui"
    return [str(script)] if script.exists() else [sys.executable, "-m", "esper_tui"]


class Tmux:
    """A private tmux server (its own socket), so the bench never touches the user's sessions."""

    def __init__(self, name: str) -> None:
        self.socket = name
        self.session = "bench"

    def __call__(self, *args: str, check: bool = True) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=10)
        if check and out.returncode != 0:
            raise RunFailed(f"tmux {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def kill_server(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        # tmux can leave its socket file behind; remove ours (never another server's).
        tmpdir = os.environ.get("TMUX_TMPDIR") or "/tmp"
        Path(tmpdir, f"tmux-{os.getuid()}", self.socket).unlink(missing_ok=True)


def run_attached(run_dir: Path, args: argparse.Namespace, tmux: Tmux) -> Result:
    result = Result("attached", run_dir)
    argv = [*esper_tui_argv(), "train", "--refresh", str(args.refresh), "--run-dir", str(run_dir),
            *engine_options(args)]
    t0 = time.monotonic()
    # More than one argument after the options: tmux executes them directly (no shell), so the pane's
    # process is the dashboard itself.
    tmux("new-session", "-d", "-s", tmux.session, "-x", str(COLS), "-y", str(ROWS), "-c", str(REPO), *argv)
    engine_pid: list[int] = []
    try:
        pane_pid = int(tmux("display", "-p", "-t", tmux.session, "#{pane_pid}").strip())
        ui_pid = pane_pid
        if "esper" not in cmdline(pane_pid):  # a shell in between: the dashboard is its child
            ui_pid = next((p for p in descendants(pane_pid) if "esper" in cmdline(p)), pane_pid)

        def find_engine() -> int | None:
            for pid in descendants(ui_pid):
                if "-m engine train" in cmdline(pid):
                    engine_pid.append(pid)
                    return pid
            return None

        watched = {"ui": ui_pid}
        if (server := parent(pane_pid)) is not None and "tmux" in cmdline(server):
            watched["tmux"] = server  # the tmux server parses what the dashboard draws: a terminal's share
        follow(result, t0, watched, find_engine, args.poll, args.timeout, steady_from(args))
        time.sleep(max(0.6, 2.5 / args.refresh))  # let the dashboard fold run_finished in before `q`
        screen = tmux("capture-pane", "-p", "-t", tmux.session, check=False)
        result.drawn = sum(1 for c in screen if not c.isspace()) > 200
        tmux("send-keys", "-t", tmux.session, "q", check=False)
        result.ui_exit = "q"
        if not wait_gone(ui_pid, 5.0):  # the quit dialog came up after all: detach (the run is over)
            tmux("send-keys", "-t", tmux.session, "d", check=False)
            result.ui_exit = "q, then d (the quit dialog opened)"
            if not wait_gone(ui_pid, 5.0):
                result.ui_exit = "did not quit; tmux server killed"
    finally:
        tmux.kill_server()
        # The engine runs in a session of its own, so ending tmux does not reach it; it exits by itself
        # after run_finished, but never leave one behind.
        for pid in engine_pid:
            if wait_gone(pid, 10.0) is False and "-m engine train" in cmdline(pid):
                os.kill(pid, signal.SIGTERM)
    return result


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------------------- report
def pct(cpu: float | None, wall: float) -> float | None:
    return None if cpu is None or wall <= 0 else 100.0 * cpu / wall


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "-" if x is None else format(x, spec)


def median_or_none(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("tmux") is None:
        print("ui_impact: tmux is not installed (the attached side runs the dashboard inside tmux); "
              "install it, e.g. apt-get install tmux", file=sys.stderr)
        return 2
    if not Path("/proc/self/stat").exists():
        print("ui_impact: needs Linux /proc to measure CPU time", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="uib", dir="/tmp"))  # short: the control socket lives in the run dir
    tmux = Tmux(f"esper-bench-{os.getpid()}")
    print(f"default task, {args.epochs} epochs, seed {args.seed}, same options both sides: "
          f"{' '.join(engine_options(args))}; dashboard {COLS}x{ROWS} in tmux at {args.refresh:g} Hz; "
          f"{args.rounds} rounds (order swaps each round); throughput skips the first {args.warmup_epochs} "
          f"epochs; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}", flush=True)
    header = (f"{'round':>5} {'side':<9} {'wall s':>7} {'train s':>8} {'samples/s':>10} {'median':>9} "
              f"{'engine CPU%':>11} {'UI CPU%':>7} {'UI steady':>9} {'UI CPU% run':>11} {'tmux CPU%':>9}  drawn")
    results: list[tuple[int, Result]] = []
    try:
        for r in range(1, args.rounds + 1):
            order = ("headless", "attached") if r % 2 else ("attached", "headless")
            print(f"\nround {r}\n{header}", flush=True)
            for side in order:
                run_dir = root / f"{side[0]}{r}"
                res = run_headless(run_dir, args) if side == "headless" else run_attached(run_dir, args, tmux)
                results.append((r, res))
                total, med = res.throughput(args.warmup_epochs)
                drawn = "-" if res.drawn is None else ("yes" if res.drawn else "NO")
                if res.ui_exit and res.ui_exit != "q":
                    drawn += f" ({res.ui_exit})"
                print(f"{r:>5} {side:<9} {res.wall_s:>7.2f} {res.train_wall_s:>8.2f} {total:>10.0f} {med:>9.0f} "
                      f"{fmt(res.share_train('engine')):>11} {fmt(res.share_train('ui')):>7} {fmt(res.share_steady('ui')):>9} "
                      f"{fmt(res.share_run('ui')):>11} {fmt(res.share_train('tmux')):>9}  {drawn}", flush=True)
    except RunFailed as exc:
        print(f"ui_impact: {exc}", file=sys.stderr)
        return 1
    finally:
        tmux.kill_server()
        if args.keep:
            print(f"run directories kept under {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    head = [res for _, res in results if res.side == "headless"]
    att = [res for _, res in results if res.side == "attached"]
    w = args.warmup_epochs
    head_tp = statistics.median(res.throughput(w)[0] for res in head)
    att_tp = statistics.median(res.throughput(w)[0] for res in att)
    by_round = {(r, res.side): res for r, res in results}
    paired = [by_round[(r, "attached")].throughput(w)[0] / by_round[(r, "headless")].throughput(w)[0]
              for r in range(1, args.rounds + 1)]
    ratio = att_tp / head_tp

    # Same work on both sides? Same configuration, same final metrics (same seed => same lifecycle).
    configs = {json.dumps(res.config, sort_keys=True) for res in head + att}
    finals = {json.dumps(res.final, sort_keys=True) for res in head + att}
    pacing = {(res.config or {}).get("min_epoch_seconds") for res in head + att}

    print()
    print(f"headless samples/s (median of {len(head)}): {head_tp:,.0f}")
    print(f"attached samples/s (median of {len(att)}): {att_tp:,.0f}")
    print(f"ratio attached/headless: {ratio:.3f}  (per round: {' '.join(f'{p:.3f}' for p in paired)}, "
          f"median {statistics.median(paired):.3f}; "
          f"target >= {TARGET}: {'met' if ratio >= TARGET else 'NOT met'})")
    ui_train = median_or_none([res.share_train("ui") for res in att])
    ui_run = median_or_none([res.share_run("ui") for res in att])
    ui_steady = median_or_none([res.share_steady("ui") for res in att])
    tmux_train = median_or_none([res.share_train("tmux") for res in att])
    eng_head = median_or_none([res.share_train("engine") for res in head])
    eng_att = median_or_none([res.share_train("engine") for res in att])
    print(f"UI process CPU share (median, % of one core): {fmt(ui_steady)}% steady (epochs {steady_from(args)}-"
          f"{args.epochs}; target < {UI_TARGET:g}%: {'met' if ui_steady is not None and ui_steady < UI_TARGET else 'NOT met'}), "
          f"{fmt(ui_train)}% while training (its start-up lands in the first epochs), "
          f"{fmt(ui_run)}% from launch to run_finished; the tmux server drawing it "
          f"(a terminal's work): {fmt(tmux_train)}% while training")
    print(f"engine process CPU share while training (median, % of one core): headless {fmt(eng_head)}%, "
          f"attached {fmt(eng_att)}%")
    if len(configs) != 1 or pacing != {0.0}:
        print(f"WARNING: the runs' configurations differ or are paced (min_epoch_seconds: {sorted(map(str, pacing))})")
    if len(finals) != 1:
        print("WARNING: the runs ended with different final metrics: the two sides may not have done the same work")
        for _, res in results:
            print(f"  {res.run_dir.name}: {res.final}")
    if max(paired) / min(paired) > 1.2:
        print(f"WARNING: per-round ratios range {min(paired):.3f}-{max(paired):.3f} (load average now "
              f"{os.getloadavg()[0]:.2f}): other load on this machine swamps the effect; rerun on an idle "
              f"machine or with more --rounds")
    if any(res.drawn is False for res in att):
        print("WARNING: the dashboard did not seem to draw in some attached runs")
    print(f"throughput ratio: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
