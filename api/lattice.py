"""The readings of a drawn number as paths through a lattice, and the best of them.

numpy only. api/segment.py cuts a drawing into atoms (pieces of ink, and the parts
between their cuts) and offers candidate digits, each a run of consecutive atoms
[first, last). A reading is a sequence of candidates that covers the atoms left to
right. Neighbours meet at a boundary, or share one atom: where two digits' strokes
run along each other no cut parts them, but two cuts close together leave the
stroke they share as an atom of its own, which both digits then hold.

States are 2 * b + roomy: the digits so far cover atoms [0, b), and roomy is 1 when
the last of them holds at least two atoms not shared with the digit before it, so
that it may share its last atom with the next digit and still keep one of its own.
An *edge* is one candidate as the next digit; a *pair* is two edges that can follow
each other. A reading's score is the sum of its edges' scores (the candidate as a
digit) and of its pairs' (the two digits side by side: their heights, how they
overlap), so the best reading is found by dynamic programming over the edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Lattice:
    edges: np.ndarray  # (e, 4) int: from state, to state, candidate, shared atom or -1
    pairs: np.ndarray  # (p, 2) int: an edge, and an edge that may follow it
    atoms: int
    _index: dict = field(default_factory=dict, repr=False)  # (edge, edge) -> pair

    def path_pairs(self, path: list[int]) -> list[int]:
        """The pairs (indices into self.pairs) of consecutive edges of a path."""
        if not self._index and len(self.pairs):
            self._index.update({(a, b): k for k, (a, b) in enumerate(self.pairs.tolist())})
        return [self._index[a, b] for a, b in zip(path, path[1:], strict=False)]


def build(spans: list[tuple[int, int]], shareable: list[bool], atoms: int) -> Lattice:
    """The lattice of candidates ``spans`` ([first, last) atoms each) over ``atoms``
    atoms, where ``shareable[i]`` says whether atom i may be held by two digits."""
    rows = []
    for k, (first, last) in enumerate(spans):
        length = last - first
        rows.append((2 * first, 2 * last + (length >= 2), k, -1))
        rows.append((2 * first + 1, 2 * last + (length >= 2), k, -1))
        # After a roomy digit that ends with atom `first`, sharing it.
        if length >= 2 and shareable[first]:
            rows.append((2 * first + 3, 2 * last + (length >= 3), k, first))
    edges = np.array(rows, np.int64).reshape(-1, 4)
    # Pairs: an edge whose end is the next one's start; in order of the next one's
    # start, so that a sweep meets every edge after all the edges that lead to it.
    by_end = np.argsort(edges[:, 1], kind="stable")
    ends = edges[by_end, 1]
    after = np.argsort(edges[:, 0], kind="stable")
    lo = np.searchsorted(ends, edges[after, 0], "left")
    hi = np.searchsorted(ends, edges[after, 0], "right")
    counts = hi - lo
    b = np.repeat(after, counts)
    a = by_end[np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())]
    return Lattice(edges, np.stack((a, b), axis=1).reshape(-1, 2), atoms)


def levels(lattice: Lattice) -> list[np.ndarray]:
    """The pairs grouped by the start of their second edge, in order: a sweep over
    them meets every edge after all the edges that lead to it."""
    starts = lattice.edges[lattice.pairs[:, 1], 0]
    cuts = np.flatnonzero(np.diff(starts)) + 1
    return np.split(np.arange(len(starts)), cuts) if len(starts) else []


def finals(lattice: Lattice) -> np.ndarray:
    """The edges that end a reading."""
    return np.flatnonzero(lattice.edges[:, 1] // 2 == lattice.atoms)


def best_path(lattice: Lattice, scores: np.ndarray, pair_scores: np.ndarray) -> list[int]:
    """The edges of the reading with the highest total score; [] when every reading
    holds a candidate scored -inf."""
    # Plain Python: a drawing's lattice has tens of pairs, where numpy's overhead per
    # call would cost more than the sums.
    s = scores.tolist()
    value = [v if start == 0 else -math.inf
             for v, start in zip(s, lattice.edges[:, 0].tolist(), strict=True)]
    back = [-1] * len(s)
    for (a, b), p in zip(lattice.pairs.tolist(), pair_scores.tolist(), strict=True):
        v = value[a] + p + s[b]
        if v > value[b]:
            value[b], back[b] = v, a
    ends = finals(lattice).tolist()
    e = max(ends, key=value.__getitem__, default=None)
    if e is None or value[e] == -math.inf:
        return []
    path = [e]
    while back[e] >= 0:
        e = back[e]
        path.append(e)
    return path[::-1]


def _logaddexp(x: float, y: float) -> float:
    if x < y:
        x, y = y, x
    return x if y == -math.inf else x + math.log1p(math.exp(y - x))


def log_total(lattice: Lattice, scores: np.ndarray, pair_scores: np.ndarray) -> float:
    """log of the sum of exp(score) over every reading (the forward algorithm)."""
    s = scores.tolist()
    # into[e]: log of the sum over the readings that lead to edge e (0 at the start).
    into = [0.0 if start == 0 else -math.inf for start in lattice.edges[:, 0].tolist()]
    for (a, b), p in zip(lattice.pairs.tolist(), pair_scores.tolist(), strict=True):
        # Every pair into a comes before the pairs out of it, so into[a] is complete.
        into[b] = _logaddexp(into[b], into[a] + s[a] + p)
    total = -math.inf
    for e in finals(lattice).tolist():
        total = _logaddexp(total, into[e] + s[e])
    return total


def path_score(lattice: Lattice, path: list[int], scores: np.ndarray,
               pair_scores: np.ndarray) -> float:
    return float(scores[path].sum() + pair_scores[lattice.path_pairs(path)].sum())


def probability(lattice: Lattice, path: list[int], scores: np.ndarray,
                pair_scores: np.ndarray, temperature: float) -> float:
    """How sure the scores are of a reading: exp(its score / T) over the sum of
    exp(score / T) over every reading."""
    s = np.asarray(scores, np.float64) / temperature
    p = np.asarray(pair_scores, np.float64) / temperature
    return float(np.exp(min(0.0, path_score(lattice, path, s, p) - log_total(lattice, s, p))))
