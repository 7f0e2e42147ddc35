"""Synthetic people for the grouping tests: identities as random unit centres, their faces scattered around them."""

from __future__ import annotations

import numpy as np

from ghostfacenets.people.grouping import GroupingSettings

DIM = 32
# For faces of :func:`identities` at spread 0.55: one person's faces have cosine ~0.75, two people's ~0.
SETTINGS = GroupingSettings(link=0.55, join=0.5, min_faces=3, join_links=2, min_quality=0.3)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def identities(
    rng: np.random.Generator, people: int, faces: int, spread: float = 0.55, dim: int = DIM
) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings, labels): ``faces`` faces drawn from ``people`` identities, in a random order."""
    centres = unit(rng.normal(size=(people, dim)))
    labels = rng.integers(0, people, faces)
    noise = rng.normal(size=(faces, dim)) * spread / np.sqrt(dim)
    return unit(centres[labels] + noise), labels


def siblings(rng: np.random.Generator, faces: int, closeness: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """Two look-alike people (centres at cosine ``closeness``), ``faces`` faces each, alternating."""
    a = unit(rng.normal(size=DIM))
    other = unit(rng.normal(size=DIM) - (rng.normal(size=DIM) @ a) * a)
    b = unit(closeness * a + np.sqrt(1 - closeness**2) * other)
    labels = np.arange(2 * faces) % 2
    noise = rng.normal(size=(2 * faces, DIM)) * 0.35 / np.sqrt(DIM)
    return unit(np.stack([a, b])[labels] + noise), labels
