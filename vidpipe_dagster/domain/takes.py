"""Which take of a multi-take clip becomes the scene's clip, and why (one line a person reads).

A request for N takes (``sampleCount``) is paid once and returns N videos. The one used
downstream is the take whose placed characters are recognised best: fewest characters not
recognised first (a take where a character cannot be scored counts it as not recognised, never
as a pass), then the best mean of the characters' median scores in the engine's own direction
(a dlib distance lower, an insightface similarity higher); the earlier take wins a tie. Without
a face engine, without placed characters, or when no take could be scored, the first take is
used and the reason says so. A person's choice (``vidpipe-dagster choose``) is kept while the
clip is the same generation: an automatic choice never overrides it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.identity import Metric

PERSON = "chosen by a person"
ChoiceKind = Literal["identity", "first", "person", "only"]


@dataclass(frozen=True)
class TakeScore:
    """One take's identity: each placed character in that take, or why it could not be scored."""

    take: int  # 1-based, in the API's order
    characters: tuple[CharacterIdentity, ...] = ()
    problem: str | None = None  # the take could not be scored at all (unreadable file, ...)

    @property
    def unrecognised(self) -> int:
        """Placed characters this take does not show recognisably (failed or not scored)."""
        return sum(c.status != "passed" for c in self.characters)

    def mean_median(self) -> float | None:
        """The mean of the scored characters' medians (None: no character was scored)."""
        medians = [c.median for c in self.characters if c.median is not None]
        return sum(medians) / len(medians) if medians else None


@dataclass(frozen=True)
class TakeChoice:
    take: int  # 1-based
    count: int
    kind: ChoiceKind
    reason: str  # one line, e.g. "take 2 of 3: best identity (median 0.41 vs 0.48, 0.55; ...)"


def only_take() -> TakeChoice:
    return TakeChoice(1, 1, "only", "take 1 of 1: the only take")


def first_take(count: int, why: str) -> TakeChoice:
    """The first take, saying why nothing better could be told apart."""
    return TakeChoice(1, count, "first", f"take 1 of {count}: first take ({why})")


def person_choice(take: int, count: int, who: str | None = None, when: str | None = None) -> str:
    """The reason recorded for a person's pick, e.g. "take 2 of 3: chosen by a person (ana,
    2026-12-03 04:12 UTC)"."""
    detail = ", ".join(part for part in (who, when) if part)
    return f"take {take} of {count}: {PERSON}" + (f" ({detail})" if detail else "")


def is_person_choice(reason: str | None) -> bool:
    return bool(reason) and f": {PERSON}" in str(reason)


def choose_take(
    scores: Sequence[TakeScore],
    *,
    engine: str | None,
    metric: Metric | None,
    engine_problem: str | None = None,
) -> TakeChoice:
    """The take to use (see the module docstring); ``scores`` holds one entry per take, in
    order. ``engine``/``metric`` name the face engine the takes were scored with (None: none)."""
    count = len(scores)
    if count <= 1:
        return only_take()
    if engine is None or metric is None:
        why = f"no face engine: {engine_problem}" if engine_problem else "no face engine"
        return first_take(count, why)
    if not any(s.characters for s in scores) and not any(s.problem for s in scores):
        return first_take(count, "no CHARACTER placed in the scene")
    values = [s.mean_median() for s in scores]
    if all(v is None for v in values):
        reasons: list[str] = []
        for score in scores:
            for why in [score.problem or ""] + [c.reason for c in score.characters]:
                if why and why not in reasons:
                    reasons.append(why)
        why = "; ".join(reasons[:2]) or "nothing to score"
        return first_take(count, f"no take could be scored: {why}")

    def rank(score: TakeScore) -> tuple[int, int, float, int]:
        value = score.mean_median()
        problem = 1 if score.problem is not None else 0
        unrecognised = score.unrecognised if score.problem is None else 1 << 20
        if value is None:
            return (unrecognised + problem, 1, 0.0, score.take)
        return (unrecognised + problem, 0, -value if metric == "cosine" else value, score.take)

    ordered = sorted(scores, key=rank)
    best = ordered[0]
    tied = [s.take for s in ordered[1:] if rank(s)[:3] == rank(best)[:3]]
    others = [s for s in scores if s.take != best.take]
    parts = []
    if len({s.unrecognised for s in scores if s.problem is None}) > 1 or any(
        s.problem for s in scores
    ):
        total = len(best.characters)
        parts.append(
            f"{total - best.unrecognised} of {total} recognised vs "
            + ", ".join(_recognised(s) for s in others)
        )
    parts.append(
        f"median {_value(best)} vs " + ", ".join(_value(s) for s in others)
        if not tied
        else f"median {_value(best)}, tied with take {', '.join(map(str, tied))}"
    )
    parts.append(f"{engine} {metric}")
    reason = f"take {best.take} of {count}: best identity ({'; '.join(parts)})"
    return TakeChoice(best.take, count, "identity", reason)


def _value(score: TakeScore) -> str:
    if score.problem is not None:
        return "not scored"
    value = score.mean_median()
    return "no face" if value is None else f"{value:.2f}"


def _recognised(score: TakeScore) -> str:
    if score.problem is not None:
        return "not scored"
    return str(len(score.characters) - score.unrecognised)


def scored_fingerprint(fingerprint: str | None, take: int | None) -> str | None:
    """What a clip's identity scores are keyed by: the request's fingerprint for the first take
    (so single-take clips keep their stored scores), a hash derived from it for another take, so
    that choosing another take marks the old scores as measured on another clip."""
    if fingerprint is None or take is None or take <= 1:
        return fingerprint
    return hashlib.sha256(f"{fingerprint}:take{take}".encode()).hexdigest()
