"""A bundle's label table: its classes, the label values it writes, their names and colours.

Each bundle ships ``configs/labels.txt`` in FreeSurfer colour-table form (``id name R G B A``) listing
the values its label maps contain. With ``space="freesurfer"`` those are FreeSurfer ids and every
class name (``channel_def``) resolves to one id, or to a left/right pair when the model merges the
hemispheres (``Hippocampus`` → 17/53, ``ctx-superiorfrontal`` → 1028/2028). ``space="lut"`` resolves names the
same way in a table of another id space (DeepNAT writes Neuromorphometrics ids). With ``space="classes"``
the values are the class indices themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .freesurfer import LutEntry, read_lut

__all__ = ["NON_BRAIN_IDS", "LabelTable", "write_lut"]

NON_BRAIN_IDS: frozenset[int] = frozenset({0, 4, 5, 14, 15, 24, 31, 43, 44, 63, 72})
"""FreeSurfer ids left out of the brain volume: CSF, ventricles and choroid plexus."""

_BACKGROUND_NAMES = {"background", "unknown", "bg"}


class LabelTable:
    """Classes of a network and the label values, names and colours written for them.

    Args:
        channel_def: class index → class name (a bundle's ``network_data_format`` output ``channel_def``).
        lut: path of the bundle's ``labels.txt`` colour table.
        space: ``"freesurfer"`` to write FreeSurfer ids, ``"lut"`` the ids of another colour table (by class
            name, like ``"freesurfer"``), ``"classes"`` to write class indices.
    """

    def __init__(self, channel_def: Mapping[str | int, str], lut: str | Path, space: str = "freesurfer") -> None:
        if space not in ("freesurfer", "lut", "classes"):
            raise ValueError(f"space must be 'freesurfer', 'lut' or 'classes', got {space!r}.")
        self.classes = [name for _, name in sorted((int(k), str(v)) for k, v in channel_def.items())]
        self.lut_path = Path(lut)
        self.entries: dict[int, LutEntry] = read_lut(lut)
        self._by_name = {entry.name: value for value, entry in self.entries.items()}
        self.space = space
        self.freesurfer = space in ("freesurfer", "lut")
        """Whether written values are the colour table's ids (resolved by class name) rather than class indices."""
        self.freesurfer_ids = [self._freesurfer_ids(name) for name in self.classes]
        if self.freesurfer:
            for index, (name, ids) in enumerate(zip(self.classes, self.freesurfer_ids)):
                if ids is None:
                    raise ValueError(
                        f"{self.lut_path}: class {index} {name!r} has no entry named {name!r}, "
                        f"'Left-{name}'/'Right-{name}' or 'ctx-lh/rh-…'; add it to the bundle's label table."
                    )
        self.class_values: list[tuple[int, ...]] = (
            list(self.freesurfer_ids) if self.freesurfer else [(i,) for i in range(len(self.classes))]
        )

    def _freesurfer_ids(self, name: str) -> tuple[int, ...] | None:
        """FreeSurfer id(s) a class name stands for in the colour table, or None if it has none."""
        by_name = self._by_name
        if name.lower() in _BACKGROUND_NAMES:
            return (0,)
        pairs = [(f"Left-{name}", f"Right-{name}")]
        if name.startswith("ctx-"):
            pairs.append((f"ctx-lh-{name[4:]}", f"ctx-rh-{name[4:]}"))
        for left, right in pairs:  # a merged structure before a same-named hi-res label (Amygdala is also 218)
            if left in by_name and right in by_name:
                return (by_name[left], by_name[right])
        return (by_name[name],) if name in by_name else None

    def freesurfer_to_class(self) -> dict[int, int]:
        """FreeSurfer id → class index, to score a FreeSurfer label map (e.g. ``aparc+aseg``) in class space."""
        return {fs: index for index, ids in enumerate(self.freesurfer_ids) if ids for fs in ids}

    def output_to_class(self) -> dict[int, int]:
        """Written label value → class index, to score the label maps this table writes."""
        return {value: index for index, values in enumerate(self.class_values) for value in values}

    @property
    def needs_hemispheres(self) -> bool:
        """Whether some class is written as a left/right pair of ids."""
        return any(len(values) == 2 for values in self.class_values)

    def names(self) -> dict[int, str]:
        """Label value → name for every value the label maps can contain."""
        if not self.freesurfer:
            return dict(enumerate(self.classes))
        return {value: self.entries[value].name for values in self.class_values for value in values}

    def colors(self) -> dict[int, tuple[int, int, int]]:
        """Label value → RGB, from the colour table (class space: the table's entry for the class index)."""
        return {value: self.entries[value].rgb if value in self.entries else (255, 255, 255) for value in self.names()}

    def brain_values(self) -> set[int]:
        """Label values that count towards the brain volume: not background, CSF, ventricles or choroid plexus.

        Classes are judged by their FreeSurfer ids where the colour table names them, else every
        non-background class counts.
        """
        brain = set()
        for index, (values, ids) in enumerate(zip(self.class_values, self.freesurfer_ids)):
            if index == 0 or (ids is not None and set(ids) <= NON_BRAIN_IDS):
                continue
            brain.update(values)
        return brain


def write_lut(path: str | Path, entries: Mapping[int, LutEntry]) -> None:
    """Write a colour table in FreeSurfer's ``FreeSurferColorLUT.txt`` form."""
    lines = ["#No. Label Name:                            R   G   B   A"]
    for value, entry in sorted(entries.items()):
        red, green, blue = entry.rgb
        lines.append(f"{value:<5}{entry.name:<40}{red:<4}{green:<4}{blue:<4}0")
    Path(path).write_text("\n".join(lines) + "\n")
