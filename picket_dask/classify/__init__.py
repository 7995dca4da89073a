"""De novo classes of picks: subvolumes at picks, rotation-invariant descriptors, unsupervised
classes, aligned class averages, junk flags, outputs in the field's formats.

Reads a run's picks and image; nothing in steps 1 and 2 depends on it.
"""

from .api import ClassifyResult, classify_picks

__all__ = ["ClassifyResult", "classify_picks"]
