"""Label tables of tissue maps whose classes are not FreeSurfer structures (iSeg-2017's CSF / GM / WM)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from .table import LabelTable

__all__ = ["TissueLabelTable"]


class TissueLabelTable(LabelTable):
    """A :class:`LabelTable` whose brain volume leaves out the classes named in ``non_brain``.

    :meth:`LabelTable.brain_values` recognises CSF by its FreeSurfer ids; a class-index table such as
    iSeg-2017's (0 background, 1 CSF, 2 GM, 3 WM) has none, so its CSF is named here instead and the
    ``EstimatedTotalBrainVolume`` of the volume tables is grey plus white matter.

    Args:
        channel_def: class index → class name.
        lut: path of the bundle's ``labels.txt``.
        space: ``"classes"`` (default) or ``"freesurfer"``, as for :class:`LabelTable`.
        non_brain: class names that do not count towards the brain volume.
    """

    def __init__(
        self,
        channel_def: Mapping[str | int, str],
        lut: str | Path,
        space: str = "classes",
        non_brain: Sequence[str] = ("CSF",),
    ) -> None:
        super().__init__(channel_def, lut, space)
        unknown = sorted(set(non_brain) - set(self.classes))
        if unknown:
            raise ValueError(f"non_brain names {unknown} are not classes of this table ({', '.join(self.classes)}).")
        self.non_brain = tuple(non_brain)

    def brain_values(self) -> set[int]:
        """Label values of the classes that count towards the brain volume: not background, not ``non_brain``."""
        left_out = {index for index, name in enumerate(self.classes) if name in self.non_brain}
        return {
            value
            for index, values in enumerate(self.class_values)
            if index != 0 and index not in left_out
            for value in values
        } & super().brain_values()
