"""FreeSurfer label ids: colour look-up tables and the grey/white tissue grouping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CEREBRAL_CORTEX_IDS",
    "DKT31_IDS",
    "GREY_MATTER_IDS",
    "WHITE_MATTER_IDS",
    "LutEntry",
    "dkt31_map",
    "read_lut",
    "tissue_map",
]

CEREBRAL_CORTEX_IDS: tuple[int, ...] = (3, 42, *range(1000, 2036))
"""Cortex in ``aseg`` (3, 42) and every ``aparc`` cortical parcel (1000–2035)."""

WHITE_MATTER_IDS: tuple[int, ...] = (2, 41, 7, 46, 16, *range(251, 256))
"""Cerebral and cerebellar white matter, brain stem and corpus callosum, as in the MeshNet training code."""

GREY_MATTER_IDS: tuple[int, ...] = (
    *CEREBRAL_CORTEX_IDS,
    *range(8, 14),  # cerebellum cortex, thalamus, caudate, putamen, pallidum (left)
    *range(17, 21),  # hippocampus, amygdala, insula, operculum (left)
    *range(26, 29),  # accumbens, substantia nigra, ventral DC (left)
    *range(47, 56),  # the same structures on the right
    *range(58, 61),
)
"""Cortical and subcortical grey matter."""


def tissue_map(white: int = 1, grey: int = 2) -> dict[int, int]:
    """FreeSurfer id → tissue class; every other id (CSF, ventricles, vessels...) is background 0."""
    mapping = {label: grey for label in GREY_MATTER_IDS}
    mapping.update({label: white for label in WHITE_MATTER_IDS})
    return mapping


DKT31_IDS: tuple[int, ...] = tuple(1000 + region for region in (2, 3, *range(5, 32), 34, 35))
"""The 31 cortical regions of the Desikan-Killiany-Tourville protocol (Klein & Tourville 2012), left hemisphere.

They are Desikan-Killiany's ``ctx-lh-*`` ids (1001–1035) without the regions DKT dropped: banks of the superior
temporal sulcus (1001), corpus callosum (1004), frontal pole (1032) and temporal pole (1033). The right hemisphere
uses the same ids plus 1000 (``ctx-rh-*``); Mindboggle-101's ``labels.DKT31.manual+aseg`` and FreeSurfer's
``aparc.DKTatlas+aseg`` use these ids.
"""


def dkt31_map() -> dict[int, int]:
    """FreeSurfer id → DKT31 class 1..31 in id order, both hemispheres on one class; every other id is background.

    Hemispheres are merged because a 38³ sub-volume rarely shows the midline, so a sub-volume network cannot tell
    a left region from its mirror image; the hemisphere is put back when label maps are written.
    """
    return {hemisphere + region: index for index, region in enumerate(DKT31_IDS, 1) for hemisphere in (0, 1000)}


@dataclass(frozen=True)
class LutEntry:
    name: str
    rgb: tuple[int, int, int]


def read_lut(path: str | Path) -> dict[int, LutEntry]:
    """Parse a FreeSurfer colour table (``FreeSurferColorLUT.txt`` form: id name R G B A)."""
    table: dict[int, LutEntry] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) < 5 or not fields[0].isdigit():
            raise ValueError(f"{path}:{number}: expected 'id name R G B [A]', got {line.strip()!r}.")
        table[int(fields[0])] = LutEntry(fields[1], (int(fields[2]), int(fields[3]), int(fields[4])))
    return table
