"""How the people defaults of docs/people.md were chosen: which quality parts (every combination's error-versus-reject
curve on the tuning set), and the grouping's link/join against the tuning set's thresholds, with the same choices
then reported on the evaluation sets. (``ghostfacenets evaluate --clustering`` reports the chosen defaults.)

    python bench/people_data.py runs/people-data
    ghostfacenets train -c quickstart-cpu ...               # docs/people.md gives the command
    python bench/people_eval.py runs/people-model/final.safetensors runs/people-data
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

from ghostfacenets.evaluate.metrics import threshold_at_far
from ghostfacenets.people.evaluation import (
    all_pairs,
    calibrated_settings,
    error_versus_reject,
    group_faces,
    read_clustering_folder,
)
from ghostfacenets.people.metrics import clustering_scores
from ghostfacenets.people.quality import DEFAULT_QUALITY, PARTS, QualityModel, reference_norm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("data", type=Path)
    args = parser.parse_args(argv)
    from ghostfacenets.pipeline import FaceRecognizer

    recognizer = FaceRecognizer(args.model, device="cpu", threads=1)
    started = time.perf_counter()
    names = [n for n in ("photos-tune", "photos-eval", "deepface") if (args.data / n).is_dir()]
    sets = {n: read_clustering_folder(recognizer, args.data / n) for n in names}
    print(f"read {sum(len(s.labels) for s in sets.values())} faces in {time.perf_counter() - started:.0f} s "
          f"(load {os.getloadavg()[0]:.1f})")  # fmt: skip

    # quality: every combination of parts (weights 0/1, the norm relative to each set's median), mean FNMR at FMR
    # 1e-2 over rejecting 0-50 % of faces, ranked on the tuning set
    rows = []
    for size in range(1, len(PARTS) + 1):
        for combo in itertools.combinations(PARTS, size):
            row = []
            for faces in sets.values():
                norm = reference_norm([p.norm for p in faces.parts])  # type: ignore[arg-type]
                model = QualityModel(weights={p: float(p in combo) for p in PARTS}, norm_reference=norm)
                row.append(error_versus_reject("q", faces.labels, faces.embeddings, faces.qualities(model)).area)
            rows.append((row, "+".join(combo)))
    rows.sort()
    print("\nmean FNMR (%) over rejecting 0-50 %, by combination of quality parts; ranked on photos-tune:")
    print("  " + "  ".join(f"{n:>11}" for n in sets))
    chosen = "+".join(p for p, w in DEFAULT_QUALITY.weights.items() if w)
    for row, combo in rows[:10] + [r for r in rows if r[1] == chosen]:
        print(
            "  " + "  ".join(f"{100 * v:11.1f}" for v in row) + f"  {combo}{'  (default)' if combo == chosen else ''}"
        )

    # grouping: link = join at the tuning set's threshold of FAR x, and around it
    tune = sets["photos-tune"]
    kept = tune.qualities() >= 0.3
    _, scores, same = all_pairs(tune.labels[kept], tune.embeddings[kept])
    fars = (1e-1, 3e-2, 1e-2, 3e-3, 1e-3)
    found = ", ".join(f"FAR {far:g}: {threshold_at_far(scores, same, far)[0]:.3f}" for far in fars)
    print(f"\nphotos-tune thresholds (faces passing the gate): {found}")
    print("BCubed P / F by link = join at the tuning set's FAR threshold (min_faces 3):")
    for far in fars:
        settings = calibrated_settings(tune, far=far)
        cells = []
        for faces in sets.values():
            s = clustering_scores(faces.labels, group_faces(faces, settings))
            cells.append(f"{s.bcubed_precision:.3f} / {s.bcubed_f:.3f}")
        print(f"  FAR {far:<6g} cos {settings.link:.3f}:  " + "   ".join(f"{n} {c}" for n, c in zip(sets, cells)))
    settings = calibrated_settings(tune)
    print("the default (FAR 1e-2), other min_faces and no quality gate:")
    for label, variant in (
        ("default", settings),
        ("min_faces 2", replace(settings, min_faces=2)),
        ("min_faces 4", replace(settings, min_faces=4)),
        ("no quality gate", replace(settings, min_quality=0.0)),
    ):
        cells = []
        for faces in sets.values():
            s = clustering_scores(faces.labels, group_faces(faces, variant))
            cells.append(f"{s.bcubed_precision:.3f} / {s.bcubed_f:.3f} / {s.unsorted:.2f}")
        print(f"  {label:<16} P / F / unsorted:  " + "   ".join(f"{n} {c}" for n, c in zip(sets, cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
