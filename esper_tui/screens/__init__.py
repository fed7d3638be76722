"""Screens of the dashboard: the main dashboard and its modal dialogs."""

from esper_tui.screens.confirm import ConfirmScreen
from esper_tui.screens.crash import CrashScreen
from esper_tui.screens.dashboard import DashboardScreen
from esper_tui.screens.help import HelpScreen
from esper_tui.screens.picker import BlueprintPicker
from esper_tui.screens.quit import QuitScreen

__all__ = ["BlueprintPicker", "ConfirmScreen", "CrashScreen", "DashboardScreen", "HelpScreen", "QuitScreen"]
