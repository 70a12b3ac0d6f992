"""Load any saved model by the format its ``model.json`` names (serving, the gate)."""

from __future__ import annotations

from pathlib import Path

from pipeline.models import als, blend, ease, hybrid, popularity  # noqa: F401 - each family registers itself
from pipeline.models.base import FAMILIES, ArtifactError, RecommenderBase, read_meta


def load_model(directory: Path) -> RecommenderBase:
    """The model saved in ``directory``, whatever its family."""
    fmt = read_meta(directory).get("format")
    family = FAMILIES.get(fmt)  # type: ignore[arg-type]
    if family is None:
        raise ArtifactError(f"{directory}: unknown model format {fmt!r}; expected one of "
                            f"{sorted(FAMILIES)}.")
    return family.load(directory)
