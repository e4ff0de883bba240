"""Where moai's shipped files live (presets, embedded corpora)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# presets/ sits at the repository root (DESIGN.md); moai_llm/presets is a link to it, which a
# built wheel turns into a copy inside the package, so a non-editable install finds it too.
PRESETS_DIR = PACKAGE_DIR / "presets"
CORPORA_DIR = PACKAGE_DIR / "corpora"


def preset_path(kind: str, name: str) -> Path:
    """Path of `presets/<kind>/<name>.yaml` (kind: models, training, hardware)."""
    return PRESETS_DIR / kind / f"{name}.yaml"
