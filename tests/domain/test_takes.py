"""The take rule on plain values: fewest characters not recognised, then the best median in the
engine's own direction, the earlier take on a tie; the first take, saying why, when nothing can
tell the takes apart."""

from __future__ import annotations

import pytest

from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.takes import (
    TakeScore,
    choose_take,
    is_person_choice,
    person_choice,
    scored_fingerprint,
)


def char(tag: str, median: float | None, *, metric: str = "euclidean") -> CharacterIdentity:
    """A character scored at ``median`` (None: no face found) against the engine's clip bar."""
    if median is None:
        return CharacterIdentity(
            tag, "not_scored", "no face found in 8 sampled frames", "dlib", "euclidean", 0.62,
            None, None, 0, 0, 8,
        )  # fmt: skip
    engine, bar = ("dlib", 0.62) if metric == "euclidean" else ("insightface", 0.5)
    passed = median <= bar if metric == "euclidean" else median >= bar
    return CharacterIdentity(
        tag, "passed" if passed else "failed", "", engine, metric, bar,  # type: ignore[arg-type]
        median, median, 8 if passed else 0, 8, 8,
    )  # fmt: skip


def takes(*per_take: tuple[CharacterIdentity, ...]) -> list[TakeScore]:
    return [TakeScore(i + 1, chars) for i, chars in enumerate(per_take)]


def test_the_take_whose_character_is_closest_wins_and_the_reason_gives_every_median() -> None:
    scores = takes((char("CHAR_01", 0.48),), (char("CHAR_01", 0.41),), (char("CHAR_01", 0.55),))
    choice = choose_take(scores, engine="dlib", metric="euclidean")
    assert (choice.take, choice.count, choice.kind) == (2, 3, "identity")
    assert choice.reason == "take 2 of 3: best identity (median 0.41 vs 0.48, 0.55; dlib euclidean)"


def test_a_similarity_is_better_when_higher() -> None:
    scores = takes(
        (char("CHAR_01", 0.55, metric="cosine"),), (char("CHAR_01", 0.71, metric="cosine"),)
    )
    choice = choose_take(scores, engine="insightface", metric="cosine")
    assert choice.take == 2
    assert "median 0.71 vs 0.55; insightface cosine" in choice.reason


def test_fewer_unrecognised_characters_beat_a_better_median() -> None:
    """Take 1 scores CHAR_01 closest, but misses CHAR_02 entirely; take 2 shows both."""
    scores = takes(
        (char("CHAR_01", 0.20), char("CHAR_02", None)),
        (char("CHAR_01", 0.50), char("CHAR_02", 0.55)),
    )
    choice = choose_take(scores, engine="dlib", metric="euclidean")
    assert choice.take == 2
    assert choice.reason.startswith("take 2 of 2: best identity (2 of 2 recognised vs 1; ")


def test_a_take_that_could_not_be_read_ranks_last() -> None:
    scores = [TakeScore(1, problem="not a readable mp4"), TakeScore(2, (char("CHAR_01", 0.70),))]
    choice = choose_take(scores, engine="dlib", metric="euclidean")
    assert choice.take == 2 and "vs not scored" in choice.reason


def test_equal_takes_keep_the_first_and_say_so() -> None:
    scores = takes((char("CHAR_01", 0.30),), (char("CHAR_01", 0.30),))
    choice = choose_take(scores, engine="dlib", metric="euclidean")
    assert choice.take == 1
    assert choice.reason == (
        "take 1 of 2: best identity (median 0.30, tied with take 2; dlib euclidean)"
    )


@pytest.mark.parametrize(
    ("scores", "engine", "expected"),
    [
        (takes((), ()), None, "take 1 of 2: first take (no face engine)"),
        (takes((), ()), "dlib", "take 1 of 2: first take (no CHARACTER placed in the scene)"),
        (
            takes((char("CHAR_01", None),), (char("CHAR_01", None),)),
            "dlib",
            "take 1 of 2: first take (no take could be scored: no face found in 8 sampled frames)",
        ),
        (takes((char("CHAR_01", 0.3),)), "dlib", "take 1 of 1: the only take"),
    ],
    ids=["no-engine", "no-character", "no-face", "one-take"],
)
def test_the_first_take_when_nothing_tells_the_takes_apart(
    scores: list[TakeScore], engine: str | None, expected: str
) -> None:
    choice = choose_take(scores, engine=engine, metric="euclidean" if engine else None)
    assert (choice.take, choice.reason) == (1, expected)


def test_a_persons_choice_is_recognisable_and_keys_its_scores_apart() -> None:
    reason = person_choice(3, 4, "ana", "2026-12-03 04:12 UTC")
    assert reason == "take 3 of 4: chosen by a person (ana, 2026-12-03 04:12 UTC)"
    assert is_person_choice(reason) and not is_person_choice("take 1 of 2: first take (...)")
    fingerprint = "a" * 64
    assert (
        scored_fingerprint(fingerprint, 1) == fingerprint == scored_fingerprint(fingerprint, None)
    )
    assert scored_fingerprint(fingerprint, 2) not in (
        fingerprint,
        scored_fingerprint(fingerprint, 3),
    )
