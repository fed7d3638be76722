"""The README's test command is the one CI runs, word for word."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command():
    ci_lines = [ln.strip() for ln in (ROOT / ".ci/run").read_text().splitlines()]
    commands = [ln for ln in ci_lines if "pytest" in ln and not ln.startswith("#")]
    assert len(commands) == 1
    assert commands[0] in (ROOT / "README.md").read_text()


def test_readme_shows_the_main_command():
    assert ".venv/bin/esper-tui" in (ROOT / "README.md").read_text()
