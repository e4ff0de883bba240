"""Where moai's shipped files live (presets, embedded corpora)."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# presets/ sits at the repository root (DESIGN.md); `pip install -e .` keeps it next to the package.
PRESETS_DIR = PACKAGE_DIR.parent / "presets"
CORPORA_DIR = PACKAGE_DIR / "corpora"


def preset_path(kind: str, name: str) -> Path:
    """Path of `presets/<kind>/<name>.yaml` (kind: models, training, hardware)."""
    return PRESETS_DIR / kind / f"{name}.yaml"
