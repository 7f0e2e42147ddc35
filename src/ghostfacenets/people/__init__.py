"""People: unlabelled faces of a photo library grouped into persons, incrementally, with quality gates and
corrections that stick (name, merge, split, "not this person")."""

from .faces import PhotoFaces, UnlabelledFace, embed_photo_faces
from .grouping import GroupingError, GroupingSettings, GroupingSummary
from .library import AddedPhotos, PeopleLibrary
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
    "embed_photo_faces",
]
