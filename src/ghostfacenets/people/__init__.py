"""People: unlabelled faces of a photo library grouped into persons, incrementally, with quality gates and
corrections that stick (name, merge, split, "not this person")."""

from ..gallery.people import AddedPhotos, PhotoFaces, UnlabelledFace
from .grouping import GroupingError, GroupingSettings, GroupingSummary
from .library import PeopleLibrary
from .metrics import ClusteringScores, clustering_scores
from .quality import DEFAULT_QUALITY, QualityModel, QualityParts

__all__ = [
    "DEFAULT_QUALITY",
    "AddedPhotos",
    "ClusteringScores",
    "GroupingError",
    "GroupingSettings",
    "GroupingSummary",
    "PeopleLibrary",
    "PhotoFaces",
    "QualityModel",
    "QualityParts",
    "UnlabelledFace",
    "clustering_scores",
]
