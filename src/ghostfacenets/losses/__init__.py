"""Margin softmax losses (ArcFace, CosFace, Sub-center, combined) and Partial FC class centres."""

from .margins import CombinedMargin, ScaleSchedule, margin_from_name
from .partial_fc import PartialFC, class_range, sharded_cross_entropy

__all__ = ["CombinedMargin", "PartialFC", "ScaleSchedule", "class_range", "margin_from_name", "sharded_cross_entropy"]
