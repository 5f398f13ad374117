"""The identity matrix: scenes by characters, each cell coloured by how recognisable the
character is in that scene's clip. The one picture a director needs to see drift.

Green passes the engine's clip threshold, red misses it, deeper the further from the bar; gray
cells could not be scored (and say so), blank cells mean the character is not placed there. Each
cell shows its median score and the frames where the face was found; the legend names every
engine present with its metric and threshold (scores of different engines are never put on one
scale: each cell is coloured against its own engine's bar).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from vidpipe_dagster.domain.clip_identity import CharacterIdentity
from vidpipe_dagster.domain.media import png_bytes

CELL_W, CELL_H = 112, 54
LABEL_W, HEADER_H = 96, 34
PAD = 12
_PASS = ((200, 235, 200), (30, 140, 60))  # near the bar -> far past it
_FAIL = ((250, 210, 200), (190, 40, 30))  # just missed -> far off
_UNSCORED = (200, 200, 200)
_EMPTY = (246, 246, 246)
_INK = (20, 20, 24)
_MUTED = (90, 90, 96)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def margin(cell: CharacterIdentity) -> float | None:
    """How far the median is past (+) or short of (-) the engine's bar, 0-1 on that engine's
    scale: distance relative to the threshold, similarity relative to the room above/below it."""
    if cell.median is None or cell.threshold is None:
        return None
    if cell.metric == "euclidean":
        value = (cell.threshold - cell.median) / max(cell.threshold, 1e-6)
    else:
        room = (1.0 - cell.threshold) if cell.median >= cell.threshold else cell.threshold + 1.0
        value = (cell.median - cell.threshold) / max(room, 1e-6)
    return max(-1.0, min(1.0, value))


def cell_colour(cell: CharacterIdentity | None) -> tuple[int, int, int]:
    if cell is None:
        return _EMPTY
    m = margin(cell)
    if cell.status == "not_scored" or m is None:
        return _UNSCORED
    light, deep = _PASS if cell.status == "passed" else _FAIL
    t = min(1.0, abs(m) * 2)  # half-way past the bar is already the deepest colour
    r, g, b = (round(a + (c - a) * t) for a, c in zip(light, deep, strict=True))
    return r, g, b


def _short_reason(reason: str) -> str:
    """A not-scored cell's reason in a few words (the full one is in the check and status)."""
    for start, short in (
        ("no face engine", "no face engine"),
        ("no reference face", "no reference face"),
        ("no face found", "no face in clip"),
    ):
        if reason.startswith(start):
            return short
    return reason[:18]


def _legend_lines(cells: Sequence[CharacterIdentity]) -> list[str]:
    lines = []
    engines: dict[str, CharacterIdentity] = {}
    for cell in cells:
        if cell.engine is not None and cell.threshold is not None:
            engines.setdefault(cell.engine, cell)
    for name, cell in sorted(engines.items()):
        if cell.metric == "euclidean":
            lines.append(
                f"{name}: median euclidean distance, green ≤ {cell.threshold:.2f} (recognised), "
                f"red > {cell.threshold:.2f}"
            )
        else:
            lines.append(
                f"{name}: median cosine similarity, green ≥ {cell.threshold:.2f} (recognised), "
                f"red < {cell.threshold:.2f}"
            )
    if not engines:
        lines.append("no face engine scored these clips")
    lines.append(
        "gray: not scored (no engine, no reference face or no face found); blank: not placed"
    )
    lines.append("cell: median score, frames where the face met the bar / frames sampled")
    return lines


def render_identity_matrix(
    scenes: Sequence[str],
    characters: Sequence[str],
    cells: Mapping[tuple[str, str], CharacterIdentity],
    *,
    title: str = "Identity per scene",
) -> bytes:
    """PNG bytes of the matrix; ``cells[(scene, character)]`` for each placed character."""
    legend = _legend_lines(list(cells.values()))
    small, body, head = _font(11), _font(13), _font(15)
    cols = max(1, len(characters))
    width = max(PAD * 2 + LABEL_W + cols * CELL_W, PAD * 2 + 7 * max(len(x) for x in legend))
    height = PAD * 2 + 26 + HEADER_H + len(scenes) * CELL_H + 10 + 16 * len(legend)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((PAD, PAD), title, font=head, fill=_INK)
    top = PAD + 26
    for col, tag in enumerate(characters):
        x = PAD + LABEL_W + col * CELL_W
        draw.text((x + CELL_W // 2, top + HEADER_H // 2), tag, font=body, fill=_INK, anchor="mm")
    for row, scene in enumerate(scenes):
        y = top + HEADER_H + row * CELL_H
        draw.text((PAD, y + CELL_H // 2), scene, font=body, fill=_INK, anchor="lm")
        for col, tag in enumerate(characters):
            x = PAD + LABEL_W + col * CELL_W
            cell = cells.get((scene, tag))
            draw.rectangle(
                (x + 1, y + 1, x + CELL_W - 2, y + CELL_H - 2),
                fill=cell_colour(cell),
                outline=(255, 255, 255),
            )
            if cell is None:
                continue
            if cell.median is None:
                first, second = "not scored", _short_reason(cell.reason)
            else:
                first = f"{cell.median:.2f}"
                second = f"{cell.frames_found}/{cell.frames_sampled} frames"
            dark = sum(cell_colour(cell)) < 360
            ink, muted = ((255, 255, 255), (235, 245, 235)) if dark else (_INK, _MUTED)
            draw.text((x + CELL_W // 2, y + 18), first, font=body, fill=ink, anchor="mm")
            draw.text((x + CELL_W // 2, y + 37), second, font=small, fill=muted, anchor="mm")
    y = top + HEADER_H + len(scenes) * CELL_H + 10
    for line in legend:
        draw.text((PAD, y), line, font=small, fill=_MUTED)
        y += 16
    return png_bytes(image)
