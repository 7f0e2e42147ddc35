"""Face liveness (passive presentation-attack detection): the MiniFASNet models with their shipped weights, their
patches and runtimes, the check beside verification and enrolment, and evaluation to ISO/IEC 30107-3
(docs/liveness.md)."""

from .checker import LivenessChecker, LivenessResult, LivenessThreshold, SpoofSuspectedError
from .datasets import PadSet, read_pad_set
from .evaluation import calibrate_liveness, evaluate_pad, write_calibrated
from .export import export_liveness
from .model import DEFAULT_THRESHOLD, MiniFASNetFusion, load_liveness_model
from .pad import PadScores, pad_report
from .runtime import LivenessModel, load_liveness

__all__ = [
    "DEFAULT_THRESHOLD",
    "LivenessChecker",
    "LivenessModel",
    "LivenessResult",
    "LivenessThreshold",
    "MiniFASNetFusion",
    "PadScores",
    "PadSet",
    "SpoofSuspectedError",
    "calibrate_liveness",
    "evaluate_pad",
    "export_liveness",
    "load_liveness",
    "load_liveness_model",
    "pad_report",
    "read_pad_set",
    "write_calibrated",
]
