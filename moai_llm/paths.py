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


# Model presets in size order (the rest follow by name): how `--help` and `moai doctor --models` list them.
_MODEL_ORDER = ("tiny", "small", "0.5b", "2b", "3b", "seed-3b", "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b")


def preset_names(kind: str = "models") -> list[str]:
    """Names of the presets shipped in `presets/<kind>/`, read from the folder (models by size):

    >>> preset_names()[:3]
    ['tiny', 'small', '0.5b']
    """
    names = [p.stem for p in (PRESETS_DIR / kind).glob("*.yaml")]
    order = {name: i for i, name in enumerate(_MODEL_ORDER)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))
