"""Pick a blueprint to germinate into the selected slot. Dismisses with the name, or None.

Names and descriptions come from the run log: shown as plain text, never as markup.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option


class BlueprintPicker(ModalScreen[str | None]):
    """A list of the run's blueprints (name and description); Enter picks, Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, slot: str, blueprints: dict[str, str]) -> None:
        super().__init__(classes="dialog")
        self.slot = slot
        self.blueprints = blueprints

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Germinate into {self.slot}: choose a blueprint", id="question", markup=False)
            yield OptionList(
                *(Option(f"{name:<16} {desc}", id=name) for name, desc in self.blueprints.items()),
                id="blueprints",
                markup=False,
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
