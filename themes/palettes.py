"""The colours of the dashboard: three palettes and their Textual themes. The only place colours live.

Stylesheets and widgets name colours by theme variable (`$stage-training`, `$error`, `$plot-1`);
this module gives those variables values. It knows nothing about widgets or the run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from textual.theme import Theme

STAGE_FIELDS = (
    "stage_dormant", "stage_germinated", "stage_training", "stage_blending", "stage_shadowing",
    "stage_probationary", "stage_fossilized", "stage_culled", "stage_embargoed",
)
PLOT_COLOURS = 6  # $plot-1 … $plot-6: line colours for the curves, in order


@dataclass(frozen=True, slots=True)
class Palette:
    """Named colours (hex) of one look. `dark` says which way the background goes."""

    name: str
    dark: bool
    background: str
    surface: str
    panel: str
    text: str
    text_muted: str
    accent: str
    border: str
    ok: str
    warn: str
    error: str
    stage_dormant: str
    stage_germinated: str
    stage_training: str
    stage_blending: str
    stage_shadowing: str
    stage_probationary: str
    stage_fossilized: str
    stage_culled: str
    stage_embargoed: str
    plot: tuple[str, ...]  # PLOT_COLOURS line colours

    def colours(self) -> dict[str, str]:
        """Every single colour by field name (for checks such as contrast and distinctness)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("name", "dark", "plot")}

    def stages(self) -> dict[str, str]:
        """Stage name ("TRAINING") → colour."""
        return {f.removeprefix("stage_").upper(): getattr(self, f) for f in STAGE_FIELDS}


DARK = Palette(
    name="esper-dark",
    dark=True,
    background="#0f1419",
    surface="#161c23",
    panel="#1f2731",
    text="#d8dee9",
    text_muted="#8b96a5",
    accent="#4fa3e0",
    border="#3b4a5a",
    ok="#5fbf77",
    warn="#e5b050",
    error="#e36b64",
    stage_dormant="#8b96a5",
    stage_germinated="#a9b4f0",
    stage_training="#4fa3e0",
    stage_blending="#c792ea",
    stage_shadowing="#56c2c2",
    stage_probationary="#e5b050",
    stage_fossilized="#5fbf77",
    stage_culled="#e36b64",
    stage_embargoed="#c08a5e",
    plot=("#4fa3e0", "#e5b050", "#5fbf77", "#c792ea", "#e36b64", "#56c2c2"),
)

LIGHT = Palette(
    name="esper-light",
    dark=False,
    background="#f7f8fa",
    surface="#ffffff",
    panel="#e9edf2",
    text="#1f2328",
    text_muted="#57606a",
    accent="#0a62b8",
    border="#9aa6b2",
    ok="#1a7f37",
    warn="#8a5a00",
    error="#c62828",
    stage_dormant="#57606a",
    stage_germinated="#4b50a8",
    stage_training="#0a62b8",
    stage_blending="#7b3fd0",
    stage_shadowing="#0b6f75",
    stage_probationary="#8a5a00",
    stage_fossilized="#1a7f37",
    stage_culled="#c62828",
    stage_embargoed="#7a4b1f",
    plot=("#0a62b8", "#b35c00", "#1a7f37", "#7b3fd0", "#c62828", "#0b6f75"),
)

# Pure black and white and a few saturated colours; every stage its own hue, all readable on black.
HIGH_CONTRAST = Palette(
    name="esper-high-contrast",
    dark=True,
    background="#000000",
    surface="#000000",
    panel="#000000",
    text="#ffffff",
    text_muted="#ffffff",
    accent="#00ffff",
    border="#ffffff",
    ok="#00ff00",
    warn="#ffff00",
    error="#ff6666",
    stage_dormant="#ffffff",
    stage_germinated="#b0b0ff",
    stage_training="#00ffff",
    stage_blending="#ff55ff",
    stage_shadowing="#50a0ff",
    stage_probationary="#ffff00",
    stage_fossilized="#00ff00",
    stage_culled="#ff6666",
    stage_embargoed="#ff9900",
    plot=("#00ffff", "#ffff00", "#00ff00", "#ff55ff", "#ff6666", "#ffffff"),
)

PALETTES: tuple[Palette, ...] = (DARK, LIGHT, HIGH_CONTRAST)


def theme_variables(palette: Palette) -> dict[str, str]:
    """The CSS variables a palette adds to Textual's: `stage-<name>`, `plot-<n>`, `panel-border`,
    and `text-muted` (overridden with a plain colour so styled text can use it too)."""
    variables = {f"stage-{stage.lower()}": colour for stage, colour in palette.stages().items()}
    variables.update({f"plot-{i}": colour for i, colour in enumerate(palette.plot, start=1)})
    variables["text-muted"] = palette.text_muted
    variables["panel-border"] = palette.border  # not Textual's $border: that one marks focus
    return variables


def to_theme(palette: Palette) -> Theme:
    """The Textual theme for a palette (register it with `App.register_theme`)."""
    return Theme(
        name=palette.name,
        primary=palette.accent,
        secondary=palette.border,
        accent=palette.accent,
        warning=palette.warn,
        error=palette.error,
        success=palette.ok,
        foreground=palette.text,
        background=palette.background,
        surface=palette.surface,
        panel=palette.panel,
        dark=palette.dark,
        variables=theme_variables(palette),
    )
