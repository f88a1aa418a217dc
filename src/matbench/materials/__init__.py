"""Material names: the curated vocabulary, the LVIS category prior and the LVIS sidecar.

The prior table is in :mod:`matbench.materials.prior` (also runnable, to rebuild it).
"""

from matbench.materials.sidecar import (
    MaterialLabel,
    build_sidecar,
    read_predictions,
    read_sidecar,
    write_sidecar,
)
from matbench.materials.vocabulary import VOCABULARY, canonical, is_material, material_names

__all__ = [
    "VOCABULARY",
    "MaterialLabel",
    "build_sidecar",
    "canonical",
    "is_material",
    "material_names",
    "read_predictions",
    "read_sidecar",
    "write_sidecar",
]
