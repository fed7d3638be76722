"""The `esper-tui` command as a user meets it (issue 9, items 6, 7, 11): starting a run, what is left
behind when it cannot start, pacing, `attach` without a path, and the quit dialog's words.

The engine is a stand-in script (its command line swapped in `esper_tui.process`), so these run in
well under a second each; the slow tests at the end run the real engine. The dashboard itself is not
started here (`cli._run_app` is recorded): test_app.py drives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from textual.app import App

from esper_tui import cli, process
from esper_tui.runs import describe_run
from esper_tui.screens.quit import QuitScreen
from esper_tui.screens.run_picker import RunPickerScreen
from esper_tui.screens.standalone import StandaloneApp
from esper_tui.screens.start_failed import StartFailedScreen
from tests.esper_tui.test_runs import EngineLock, Run, started
from themes import STYLESHEETS, VARIABLE_DEFAULTS

pytestmark = pytest.mark.timeout(60)

CIFAR_ERROR = "error: CIFAR-10 not found: /nonexistent is not a directory; pass --data-dir DIR"
FAKE_ENGINE = f"""
import json, os, sys, time
mode, run_dir, *argv = sys.argv[1:]
log = os.path.join(run_dir, "events.jsonl")
if mode == "refuse":  # the engine's way: its log opened (empty) and removed again, its one-line reason, exit 2
    open(log, "a").close()
    time.sleep(0.3)
    os.unlink(log)
    print("loading the task", file=sys.stderr)
    print({CIFAR_ERROR!r}, file=sys.stderr)
    sys.exit(2)
if mode == "hang":
    time.sleep(60)
with open(os.path.join(run_dir, "argv.json"), "w") as f:
    json.dump(argv, f)
with open(log, "a") as f:
    f.write('{{"kind": "run_started"}}\\n')
"""


class Recorder:
    """Stands in for a function of cli and remembers its calls."""

    def __init__(self, result: Any = 0) -> None:
        self.calls: list[tuple] = []
        self.result = result

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        return self.result


class Exec(Exception):
    """os.execve, stopped: what would have replaced this process."""


@pytest.fixture
def here(run_dir, monkeypatch):
    """A fresh working directory (./runs is made there), with no real engine or dashboard."""
    monkeypatch.chdir(run_dir)

    def execve(path, argv, env):
        raise Exec(argv, env)

    monkeypatch.setattr(os, "execve", execve)
    return run_dir


@pytest.fixture
def engine(monkeypatch):
    """The stand-in engine; set `engine.mode` to "start" (default), "refuse" or "hang"."""

    class Fake:
        mode = "start"
        nprocs: list[int] = []  # the processes each launch asked for (torchrun when > 1)

    fake = Fake()

    def command(run_dir, args, python=None, nproc=1):
        fake.nprocs.append(nproc)
        return [sys.executable, "-c", FAKE_ENGINE, fake.mode, str(run_dir), *args]

    monkeypatch.setattr(process, "engine_command", command)
    return fake


@pytest.fixture
def dashboard(monkeypatch):
    recorder = Recorder(0)
    monkeypatch.setattr(cli, "_run_app", recorder)
    return recorder


@pytest.fixture
def start_failed(monkeypatch):
    recorder = Recorder(None)
    monkeypatch.setattr(cli, "show_start_failed", recorder)
    return recorder


def only_run(base: Path) -> Path:
    (path,) = (base / "runs").iterdir()
    return path


def engine_argv(run: Path) -> list[str]:
    return json.loads((run / "argv.json").read_text())


# ---------------------------------------------------------------------------------- starting a run (items 6, 7)
def test_the_live_run_is_named_after_its_task_and_paced_whatever_the_options(here, engine, dashboard, capsys):
    assert cli.main(["--task", "mnist5k", "--epochs", "3"]) == 0
    run = only_run(here)
    assert run.name.endswith("-mnist5k") and run.name[:15].replace("-", "").isdigit()
    # Pacing first, so that a --set of the user's own comes later and wins.
    assert engine_argv(run) == ["--set", "min_epoch_seconds=0.5", "--task", "mnist5k", "--epochs", "3"]
    (source, _refresh, _theme, watched), = dashboard.calls
    assert watched.resolve() == run.resolve() and source.run_dir == watched
    assert f"starting the engine in runs/{run.name}" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "pace"), [
    (["--pace", "0"], "0.0"),
    (["train", "--pace", "2", "--preset", "quick"], "2.0"),
    (["train", "--preset", "text", "--pace", "1.5"], "1.5"),
])
def test_pace_sets_the_seconds_per_epoch_and_zero_is_full_speed(here, engine, dashboard, argv, pace):
    assert cli.main(argv) == 0
    run = only_run(here)
    assert engine_argv(run)[:2] == ["--set", f"min_epoch_seconds={pace}"]
    assert run.name.endswith("-text" if "text" in argv else "-digits")


def test_a_set_of_the_users_own_still_wins_over_the_default_pace(here, engine, dashboard):
    assert cli.main(["train", "--set", "min_epoch_seconds=3"]) == 0
    argv = engine_argv(only_run(here))
    _args, config = cli.checked_options(argv)  # what the engine makes of them
    assert config.min_epoch_seconds == 3


def test_headless_paces_only_when_asked(here):
    with pytest.raises(Exec) as paced:
        cli.main(["train", "--headless", "--pace", "1", "--epochs", "2"])
    assert paced.value.args[0][-4:] == ["--set", "min_epoch_seconds=1.0", "--epochs", "2"]
    with pytest.raises(Exec) as full_speed:
        cli.main(["train", "--headless", "--epochs", "2"])
    assert not any("min_epoch_seconds" in word for word in full_speed.value.args[0])


def test_nproc_per_node_starts_the_engine_under_torchrun(here, engine, dashboard):
    assert cli.main(["train", "--nproc-per-node", "2", "--epochs", "3"]) == 0
    assert engine.nprocs == [2]
    assert engine_argv(only_run(here))[-2:] == ["--epochs", "3"]  # the dashboard's own option is not passed on


def test_the_torchrun_command_line_starts_n_engines_on_this_node():
    assert process.engine_command(Path("runs/x"), ["--epochs", "3"], nproc=2) == [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "engine", "train", "--run-dir", "runs/x", "--quiet", "--epochs", "3"]
    assert process.engine_command(Path("runs/x"), [])[:4] == [sys.executable, "-m", "engine", "train"]


def test_headless_under_torchrun_names_one_run_directory_for_every_rank(here):
    with pytest.raises(Exec) as fresh:
        cli.main(["train", "--headless", "--nproc-per-node", "2", "--task", "mnist5k"])
    argv = fresh.value.args[0]
    assert argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert argv[-2] == "--run-dir" and argv[-1] == str(Path("runs") / only_run(here).name)
    assert argv[-1].endswith("-mnist5k")
    with pytest.raises(Exec) as named:
        cli.main(["train", "--headless", "--nproc-per-node", "2", "--run-dir", "mine"])
    assert named.value.args[0][-2:] == ["--run-dir", "mine"]


@pytest.mark.parametrize("value", ["0", "two"])
def test_a_bad_process_count_is_refused_before_anything_starts(here, capsys, value):
    with pytest.raises(SystemExit) as refused:
        cli.main(["train", "--nproc-per-node", value])
    assert refused.value.code == 2
    assert "--nproc-per-node" in capsys.readouterr().err
    assert list(here.iterdir()) == []


def test_fork_starts_the_engine_on_the_source_at_the_epoch(here, engine, dashboard):
    with pytest.raises(Exec) as headless:
        cli.main(["fork", "runs/old", "--epoch", "12", "--headless", "--epochs", "30"])
    assert headless.value.args[0] == [sys.executable, "-m", "engine", "train", "--fork", "runs/old",
                                      "--fork-epoch", "12", "--epochs", "30"]
    assert cli.main(["fork", "runs/old", "--epoch", "12"]) == 0  # live: the dashboard on a new run directory
    assert engine_argv(only_run(here))[2:] == ["--fork", "runs/old", "--fork-epoch", "12"]


def test_forking_from_a_replay_starts_the_live_fork(here, monkeypatch):
    import esper_tui.app

    class ForkingApp:  # the replay, left with F at epoch 7
        def __init__(self, *args, **kwargs):
            self.fork_epoch, self.return_code = None, 0

        def run(self):
            self.fork_epoch = 7

    monkeypatch.setattr(esper_tui.app, "EsperApp", ForkingApp)
    live = Recorder(0)
    monkeypatch.setattr(cli, "_live", lambda *args, **kwargs: live(args, kwargs))
    assert cli._run_app(object(), 4.0, "esper-dark", Path("runs/old")) == 0
    ((args, kwargs),) = live.calls
    assert args[0] == ["--fork", "runs/old", "--fork-epoch", "7"]
    assert kwargs["command"] == "esper-tui fork runs/old --epoch 7"


def test_train_help_documents_pace_and_lists_the_engine_options(here, capsys):
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: esper-tui train")
    assert "--pace SECONDS" in out and "default 0.5; 0 = full speed" in " ".join(out.split())
    for option in ("--task TASK", "--epochs EPOCHS", "--run-dir RUN_DIR", "--resume RUN_DIR", "--headless"):
        assert option in out


def test_checking_options_and_listing_runs_load_no_torch():
    """The engine's option parser and config are used in-process: they must stay torch-free."""
    code = ("import sys; from esper_tui import cli, runs; cli.checked_options(['--task', 'mnist5k', '--set', "
            "'lifecycle.blend_epochs=3']); cli.train_help(); runs.find_runs('.'); "
            "assert not {'torch', 'numpy'} & {m.split('.')[0] for m in sys.modules}, 'torch loaded'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


@pytest.mark.parametrize(("argv", "reason"), [
    (["--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["train", "--epochs", "x"], "argument --epochs: invalid int value: 'x'"),
    (["train", "--set", "x=1"], "invalid configuration: x: Extra inputs are not permitted"),
    (["train", "--set", "nokv"], "--set expects KEY=VALUE, got 'nokv'"),
    (["--theme", "esper-light", "--no-such-option"], "unrecognized arguments: --no-such-option"),
])
def test_a_bad_option_is_one_line_exit_2_and_nothing_is_created(here, monkeypatch, capsys, argv, reason):
    monkeypatch.setattr(process.EngineProcess, "start", Recorder())
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"esper-tui train: error: {reason} (esper-tui train --help lists the options)"]
    assert process.EngineProcess.start.calls == []
    assert list(here.iterdir()) == []


def test_an_engine_that_refuses_to_start_is_a_message_exit_2_and_leaves_nothing(here, engine, dashboard,
                                                                               start_failed, capsys):
    engine.mode = "refuse"
    assert cli.main(["train", "--task", "cifar10", "--data-dir", "/nonexistent"]) == 2
    (message, command, note, _theme), = start_failed.calls
    assert message == CIFAR_ERROR
    assert command == "esper-tui train --task cifar10 --data-dir /nonexistent"
    assert note.startswith("Nothing was left behind")
    assert dashboard.calls == []  # no dashboard, no crash screen: there was no run
    assert list(here.iterdir()) == []  # not even ./runs, made for it
    assert CIFAR_ERROR in capsys.readouterr().err  # and in the terminal once the screen is gone


def test_a_refused_start_in_a_directory_that_existed_keeps_it_as_it_was(here, engine, dashboard, start_failed):
    engine.mode = "refuse"
    (here / "runs").mkdir()
    mine = here / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    assert cli.main(["train", "--run-dir", str(mine)]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]  # our engine.out/err went again
    assert (here / "runs").is_dir()  # it was there before
    (_message, _command, note, _theme), = start_failed.calls
    assert "left as it was" in note


def test_ctrl_c_while_the_engine_loads_ends_it_and_tidies_up(here, engine, dashboard, monkeypatch):
    engine.mode = "hang"
    started_processes = []
    real_start = process.EngineProcess.start

    def start(*args, **kwargs):
        proc = real_start(*args, **kwargs)
        started_processes.append(proc)
        return proc

    def interrupted(proc):
        raise KeyboardInterrupt

    monkeypatch.setattr(process.EngineProcess, "start", start)
    monkeypatch.setattr(cli, "_wait_for_start", interrupted)
    assert cli.main([]) == 130
    (proc,) = started_processes
    assert proc.poll() is not None
    assert list(here.iterdir()) == [] and dashboard.calls == []


# ---------------------------------------------------------------------------------- attach without a path (item 6)
def test_attach_with_no_runs_at_all_says_so_in_a_line_and_exits_2(here, capsys):
    assert cli.main(["attach"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "no runs under runs/" in err[0] and "esper-tui attach RUN_DIR" in err[0]


def test_attach_without_a_path_watches_the_only_live_run(here, dashboard, monkeypatch):
    monkeypatch.setattr(cli, "pick_run", Recorder(None))
    Run(here / "runs", "old", started=started(0)).epochs([50.0]).finish()
    live = Run(here / "runs", "live", started=started(-5))  # older, but live
    live.writer.flush()
    lock = EngineLock(live.path)
    try:
        assert cli.main(["attach"]) == 0
    finally:
        lock.release()
        live.close()
    (source, _refresh, _theme, watched), = dashboard.calls
    assert watched == Path("runs/live") and source.run_dir == Path("runs/live")
    assert cli.pick_run.calls == []


@pytest.mark.parametrize("n_live", [0, 2])
def test_attach_without_a_path_offers_the_runs_when_not_exactly_one_is_live(here, dashboard, monkeypatch, n_live):
    names = ["a", "b", "c"]
    for minute, name in enumerate(names):
        Run(here / "runs", name, started=started(minute)).epochs([50.0]).close()
    locks = [EngineLock(here / "runs" / name) for name in names[:n_live]]
    picker = Recorder(Path("runs/a"))
    monkeypatch.setattr(cli, "pick_run", picker)
    try:
        assert cli.main(["attach"]) == 0
    finally:
        for lock in locks:
            lock.release()
    ((offered, _theme),) = picker.calls
    assert [r.name for r in offered] == ["c", "b", "a"]  # newest first
    assert dashboard.calls[0][3] == Path("runs/a")

    picker.result = None  # q or Escape in the picker: nothing attached
    dashboard.calls.clear()
    assert cli.main(["attach"]) == 0 and dashboard.calls == []


def screen_text(app: App) -> str:
    """Every character on the screen, as a user without colour sees it."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


@pytest.mark.asyncio
async def test_the_run_picker_lists_the_runs_and_enter_attaches(run_dir):
    Run(run_dir, "20261204-013000-digits", started=started(0)).epochs([50.0, 97.25]).finish()
    live = Run(run_dir, "20261204-013100-mnist5k", task="mnist5k", planned=100, started=started(1))
    live.epochs([60.0])
    live.close()
    lock = EngineLock(live.path)
    try:
        runs = [describe_run(run_dir / "20261204-013100-mnist5k"), describe_run(run_dir / "20261204-013000-digits")]
    finally:
        lock.release()
    app = StandaloneApp(RunPickerScreen(runs, "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        lines = screen_text(app).splitlines()
        assert lines[0].strip() == "Attach to which run? 1 live of 2 under runs/"
        shown = [line.rstrip() for line in lines if "2026120" in line]
        assert shown == [
            "> 20261204-013100-mnist5k mnist5k live     1/100 60.0%    2026-12-04 01:31",
            "  20261204-013000-digits  digits  finished 2/10  97.2%    2026-12-04 01:30",
        ]
        assert "Enter attaches" in lines[-1] and "q or Escape quits" in lines[-1]
        await pilot.press("down")
        await pilot.pause()
        assert "> 20261204-013000-digits" in screen_text(app)
        await pilot.press("enter")
    assert app.return_value == run_dir / "20261204-013000-digits"

    app = StandaloneApp(RunPickerScreen(runs, "runs"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
    assert app.return_value is None


@pytest.mark.asyncio
async def test_the_could_not_start_screen_says_why_and_how_to_leave():
    screen = StartFailedScreen(CIFAR_ERROR + "\x1b]0;x\x07", "esper-tui train --task cifar10 --data-dir /nonexistent",
                               "Nothing was left behind (runs/x was removed).")
    app = StandaloneApp(screen)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        assert "The run could not start" in text
        assert "error: CIFAR-10 not found: /nonexistent is not a directory" in text
        assert "\x1b" not in text and "\\x1b]0;x\\x07" in text  # the engine's words, shown as text
        assert "command: esper-tui train --task cifar10 --data-dir /nonexistent" in text
        assert "press q to quit" in text
        await pilot.press("q")
    assert not app.is_running


# ---------------------------------------------------------------------------------- the quit dialog (item 11)
class QuitHost(App[str]):
    """The quit dialog in the dashboard's stylesheet, over an empty screen."""

    CSS_PATH = STYLESHEETS

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.run_dir = run_dir

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return VARIABLE_DEFAULTS

    def on_mount(self) -> None:
        self.push_screen(QuitScreen(self.run_dir), self.exit)


@pytest.mark.asyncio
async def test_the_quit_dialog_gives_the_whole_attach_command_and_says_stop_or_detach(run_dir, monkeypatch):
    monkeypatch.chdir(run_dir)
    relative = "runs/20261204-013000-mnist5k-with-a-rather-long-name-2"
    whole = f"esper-tui attach {run_dir}/{relative}"  # absolute: it works from any directory
    app = QuitHost(relative)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        text = screen_text(app)
        inside = [line.strip().strip("│").strip() for line in text.splitlines() if "│" in line]
        assert "".join(whole.split()) in "".join("".join(inside).split())  # wrapped, never cut
        assert all(len(line) <= 80 for line in text.splitlines())
        assert "Stop: the run saves a checkpoint and ends." in text
        assert "Detach: the dashboard closes, the run goes on." in text and "Watch it again with:" in text
        assert "no detach" not in text and "(default)" not in text
        assert "Stop (s)" in text and "Detach (d)" in text and "Cancel (esc)" in text
        await pilot.press("d")
    assert app.return_value == "detach"


def test_an_unknown_task_is_refused_before_anything_starts(here, dashboard, start_failed, capsys):
    assert cli.main(["train", "--task", "bogus"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and "'digits'" in err and "Traceback" not in err
    assert dashboard.calls == [] and start_failed.calls == [] and list(here.iterdir()) == []


# ---------------------------------------------------------------------------------- the real engine (slow)
@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("argv", "reason"), [
    (["train", "--task", "cifar10", "--data-dir", "/nonexistent"], "error: CIFAR-10 not found: /nonexistent"),
])
def test_the_real_engine_refusing_to_start_is_a_message_and_leaves_nothing(here, dashboard, start_failed, capsys,
                                                                           argv, reason):
    assert cli.main(argv) == 2
    shown = start_failed.calls[0][0] if start_failed.calls else capsys.readouterr().err  # (checked in-process)
    assert reason in shown and "Traceback" not in shown
    assert dashboard.calls == [] and list(here.iterdir()) == []
