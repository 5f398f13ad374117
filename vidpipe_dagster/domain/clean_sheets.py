"""Clean sheets: reference images redrawn so Veo sees the subject, not the scene around it.

Tier 2 removes the background locally and composites the subject on neutral gray (#808080).
rembg is used when its weights are on disk (by default ``u2netp``, which the set-up caches in
the models folder); otherwise OpenCV GrabCut, a weight-free engine that is labelled as such
(``tier2_grabcut``) so nobody mistakes it for a model's output. Nothing here ever downloads
weights. A photo with nothing to separate (one flat colour) is refused before any engine runs.
Tier 2 functions are CPU-bound and synchronous: callers run them in a thread.

Tier 3's rules live here too (the prompt, each face engine's thresholds per try, what a try's
outcome is); the paid loop that asks the image model is ``generation.tier3``. Without a face
engine the image is accepted but marked "not validated" with the reason, never silently passed
(docs/architecture.md).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image, ImageOps

from vidpipe_dagster.domain.catalog import packaged_catalog
from vidpipe_dagster.domain.identity import FaceScore, thresholds_for
from vidpipe_dagster.domain.media import MediaError, decode_image, png_bytes

NEUTRAL_GRAY: tuple[int, int, int] = (128, 128, 128)  # #808080

TIER2_REMBG = "tier2_rembg"
TIER2_GRABCUT = "tier2_grabcut"
TIER3_GEMINI = "tier3_gemini"

DEFAULT_REMBG_MODEL = "u2netp"  # rembg's small model: the set-up fetches it (MIT, 4.6 MB)
CUSTOM_REMBG_SESSIONS = ("u2net_custom", "dis_custom", "ben_custom")

# Only the run config's default for the settings' default image model; prices are the catalog's
# (generation.tier3 and generation.images price any model from it when given no price).
DEFAULT_TIER3_PRICE_USD = packaged_catalog().image_models["gemini-2.5-flash-image"].price()
TIER3_MAX_TRIES = 3


class CleanSheetError(RuntimeError):
    """A clean sheet could not be made from a valid image (e.g. no subject was separated)."""


class NothingToSeparate(CleanSheetError):
    """The photo is (nearly) one flat colour: there is no subject to cut out."""


class BackgroundModelError(RuntimeError):
    """The configured background-removal model cannot be loaded (a configuration error: running
    again will not help; the message names the file)."""


# --------------------------------------------------------------------------------------------
# Tier 2


def composite_on_gray(rgba: Image.Image) -> Image.Image:
    """The subject over #808080 using its alpha; opaque images come back unchanged as RGB."""
    subject = rgba if rgba.mode == "RGBA" else rgba.convert("RGBA")
    background = Image.new("RGBA", subject.size, (*NEUTRAL_GRAY, 255))
    return Image.alpha_composite(background, subject).convert("RGB")


def _upright_rgb(image_bytes: bytes, label: str) -> Image.Image:
    return upright_rgb(decode_image(image_bytes, label=label))


def upright_rgb(image: Image.Image) -> Image.Image:
    """The decoded image turned as its EXIF orientation says, as RGB: what every engine gets.
    Turned in place and converted only when it is not RGB already: each copy of a 1024x1024
    image is a few ms, a few % of the background removal."""
    ImageOps.exif_transpose(image, in_place=True)
    return image if image.mode == "RGB" else image.convert("RGB")


# Clean sheets are written at zlib level 1. On a 1024x1024 sheet (bench/tier2.py prints these in
# each run) Pillow's default level 6 took about 150 ms against 45 ms, over roughly 245 ms for
# everything else (decode, u2netp, composite), for a file 12 % smaller (0.78 against 0.89 MB):
# a sheet is written once and sent a few times, so those bytes are not worth a third more time.
CLEAN_SHEET_PNG_LEVEL = 1


FLAT_TOLERANCE = 8  # levels per channel: JPEG noise on a flat colour stays within this
FLAT_MAX_SAMPLE_SIDE = 256


def flat_colour_share(rgb: np.ndarray) -> tuple[float, tuple[int, int, int]]:
    """(share of pixels within ``FLAT_TOLERANCE`` of the median colour, that colour), measured
    on a copy at most 256 px large so the check itself stays cheap."""
    image = np.asarray(rgb)[:, :, :3]
    step = max(1, -(-max(image.shape[:2]) // FLAT_MAX_SAMPLE_SIDE))
    sample = image[::step, ::step].reshape(-1, 3).astype(np.int16)
    median = np.median(sample, axis=0).astype(np.int16)
    share = float((np.abs(sample - median) <= FLAT_TOLERANCE).all(axis=1).mean())
    r, g, b = (int(v) for v in median)
    return share, (r, g, b)


def check_something_to_separate(
    rgb: np.ndarray, *, label: str, min_subject_fraction: float = 0.005
) -> None:
    """Raise ``NothingToSeparate`` for a photo that is one flat colour (all but less than
    ``min_subject_fraction`` of it). Such a photo has no subject, and OpenCV's GrabCut stalls on
    it for minutes (its smoothness term degenerates when neighbouring pixels never differ)."""
    share, (r, g, b) = flat_colour_share(rgb)
    if 1.0 - share < min_subject_fraction:
        raise NothingToSeparate(
            f"{label}: nothing to separate, {share:.1%} of the image is one flat colour "
            f"#{r:02x}{g:02x}{b:02x}"
        )


class BackgroundRemover(Protocol):
    """One background-removal engine. ``remove`` returns the upright image with alpha."""

    name: str  # engine: "rembg" | "grabcut"
    model: str  # what ran: a rembg model name or file, or "opencv-grabcut"
    tier_label: str  # AssetCleanReference.tier (String(20))

    def load(self) -> None:
        """Load the model now; raises ``BackgroundModelError`` when it cannot be loaded."""
        ...

    def remove(self, image: Image.Image) -> Image.Image:
        """``image`` is the decoded, upright RGB input (``upright_rgb``): decoded once by the
        caller, never again here."""
        ...


_rembg_sessions: dict[tuple[str, str], Any] = {}
_rembg_lock = threading.Lock()


def _rembg_session(model_name: str, model_file: Path) -> Any:
    """One rembg session per (model, file) per process, pinned to a file already on disk.

    rembg's session classes run unchanged except for their file lookup, which is overridden to
    return ``model_file``: a named model can then never start a download, and a custom model may
    live outside rembg's home (rembg refuses that for its HTTP server; here the path is operator
    configuration).
    """
    key = (model_name, str(model_file))
    with _rembg_lock:
        session = _rembg_sessions.get(key)
        if session is None:
            import onnxruntime as ort
            from rembg.sessions import sessions

            base = sessions[model_name]
            pinned = type(
                f"Pinned{base.__name__}",
                (base,),
                {"download_models": classmethod(lambda cls, *a, **k: str(model_file))},
            )
            try:
                session = pinned(
                    model_name,
                    ort.SessionOptions(),
                    providers=["CPUExecutionProvider"],
                    model_path=str(model_file),
                )
            except Exception as exc:  # onnxruntime's own classes (INVALID_PROTOBUF, NO_SUCHFILE…)
                first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise BackgroundModelError(
                    f"rembg model file {model_file} cannot be loaded as an ONNX model "
                    f"({first_line[:160]}); point the setting at a rembg .onnx file "
                    "(e.g. u2netp.onnx from `make models`) or unset it"
                ) from exc
            _rembg_sessions[key] = session
        return session


class RembgRemover:
    """rembg with a local model: a named one found in rembg's home, or a custom ONNX file."""

    name = "rembg"
    tier_label = TIER2_REMBG

    def __init__(self, model_name: str, model_file: str | Path) -> None:
        self.model_name = model_name
        self.model_file = Path(model_file).expanduser().resolve()
        custom = model_name in CUSTOM_REMBG_SESSIONS
        self.model = f"{model_name}:{self.model_file.name}" if custom else model_name

    def load(self) -> None:
        _rembg_session(self.model_name, self.model_file)

    def remove(self, image: Image.Image) -> Image.Image:
        import rembg

        session = _rembg_session(self.model_name, self.model_file)
        # putalpha keeps colours straight (not premultiplied), so gray compositing has no dark rim
        cutout = rembg.remove(image, session=session, putalpha=True)
        return cutout if cutout.mode == "RGBA" else cutout.convert("RGBA")


class GrabCutRemover:
    """Weight-free engine: OpenCV GrabCut seeded with "everything near the border is background".

    Work is bounded: the mask is computed on a copy at most ``max_side`` pixels large (then
    scaled back up) in at most ``iterations`` rounds, and a flat photo is refused before GrabCut
    runs (it stalls on one). Measured on a 512 px photo: 384 px takes about half the time of 512
    px, and rounds after the fourth change almost nothing. Subjects that touch the frame edge
    lose that edge: use rembg for those.
    """

    name = "grabcut"
    model = "opencv-grabcut"
    tier_label = TIER2_GRABCUT

    def __init__(
        self, *, max_side: int = 384, iterations: int = 4, margin_fraction: float = 0.03
    ) -> None:
        self.max_side = max_side
        self.iterations = iterations
        self.margin_fraction = margin_fraction

    def load(self) -> None:
        """Nothing to load: OpenCV is a dependency."""

    def mask(self, rgb: np.ndarray, *, label: str = "image") -> np.ndarray:
        """Foreground probability 0-255 at the input's size."""
        import cv2

        height, width = rgb.shape[:2]
        if min(height, width) < 8:
            raise CleanSheetError(f"image of {width}x{height} px is too small to separate")
        check_something_to_separate(rgb, label=label)
        scale = min(1.0, self.max_side / max(height, width))
        small = rgb
        if scale < 1.0:
            size = (max(8, round(width * scale)), max(8, round(height * scale)))
            small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        sh, sw = small.shape[:2]
        margin = max(1, round(self.margin_fraction * min(sh, sw)))
        labels = np.zeros((sh, sw), np.uint8)
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.grabCut(
            np.ascontiguousarray(small[:, :, ::-1]),  # OpenCV wants BGR
            labels,
            (margin, margin, sw - 2 * margin, sh - 2 * margin),
            bgd_model,
            fgd_model,
            self.iterations,
            cv2.GC_INIT_WITH_RECT,
        )
        fg = np.where((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD), 255, 0).astype(np.uint8)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)  # drop speckles of texture
        if (sh, sw) != (height, width):
            fg = cv2.resize(fg, (width, height), interpolation=cv2.INTER_LINEAR)
        return fg

    def remove(self, image: Image.Image) -> Image.Image:
        rgba = image.convert("RGBA")
        rgba.putalpha(Image.fromarray(self.mask(np.asarray(image))))
        return rgba


def _rembg_weights_file(
    model_name: str, models_dir: str | Path | None = None
) -> tuple[Path | None, str]:
    """(file, "") when rembg would load ``model_name`` from disk, else (None, why not).

    First ``<models_dir>/<name>.onnx`` (the set-up's cache), then rembg 2.0.86's own lookup:
    ``<rembg home>/models/<name>/<name>.onnx`` (home from ``U2NET_HOME``, ``REMBG_HOME``,
    ``XDG_DATA_HOME`` or ``~/.rembg``), then the legacy flat ``$U2NET_HOME`` or
    ``~/.u2net/<name>.onnx``.
    """
    from rembg.sessions import sessions

    session_class = sessions.get(model_name)
    if session_class is None:
        return None, f"rembg has no model named {model_name!r}"
    if not session_class.is_local() or session_class.requires_credentials():
        return None, f"rembg model {model_name!r} is a remote service; images stay local"
    if model_name in CUSTOM_REMBG_SESSIONS:
        return None, f"rembg model {model_name!r} needs VIDPIPE_REMBG_MODEL_PATH"
    cached = Path(models_dir).expanduser() / f"{model_name}.onnx" if models_dir else None
    if cached is not None and cached.is_file():
        return cached.resolve(), ""
    found = session_class.resolve_existing(f"{model_name}.onnx")
    if found is None:
        where = Path(session_class.model_dir()) / f"{model_name}.onnx"
        places = f"{cached} or {where}" if cached is not None else str(where)
        return None, f"rembg weights for {model_name!r} are absent (looked for {places})"
    return Path(found), ""


def choose_background_remover(
    model_name: str = DEFAULT_REMBG_MODEL,
    model_path: str | Path | None = None,
    models_dir: str | Path | None = None,
) -> tuple[BackgroundRemover, str]:
    """rembg when its weights are on disk, else GrabCut; the note says which and why.

    ``model_path`` (a local ONNX file) wins; otherwise ``model_name`` is looked up in
    ``models_dir`` (the set-up's cache) and then in rembg's home.
    """
    if model_path:
        file = Path(model_path).expanduser()
        if file.is_file():
            session = model_name if model_name in CUSTOM_REMBG_SESSIONS else "u2net_custom"
            return RembgRemover(session, file), f"rembg {session} with local model {file}"
        reason = f"rembg model file {file} does not exist"
    else:
        weights, reason = _rembg_weights_file(model_name, models_dir)
        if weights is not None:
            return RembgRemover(model_name, weights), f"rembg {model_name} ({weights})"
    return GrabCutRemover(), f"{reason}; used the weight-free engine (OpenCV GrabCut)"


@dataclass(frozen=True)
class Tier2Result:
    png_bytes: bytes  # RGB, subject over #808080
    tier_label: str  # "tier2_rembg" | "tier2_grabcut"
    engine: str
    model: str
    note: str
    subject_fraction: float  # share of the image kept as subject (0-1)


def make_tier2_clean_sheet(
    image_bytes: bytes,
    remover: BackgroundRemover,
    *,
    label: str = "reference image",
    note: str = "",
    min_subject_fraction: float = 0.005,
) -> Tier2Result:
    """Remove the background and composite on gray; a blank result raises ``CleanSheetError``.

    ``label`` (e.g. the file name) names the input in every error; corrupt input raises
    ``MediaError`` and a flat photo ``NothingToSeparate``, both before any engine runs. The
    input is decoded once here and handed to the engine decoded; the sheet is written at
    ``CLEAN_SHEET_PNG_LEVEL``.
    """
    image = _upright_rgb(image_bytes, label)
    check_something_to_separate(
        np.asarray(image), label=label, min_subject_fraction=min_subject_fraction
    )
    rgba = remover.remove(image)
    fraction = float(np.asarray(rgba.getchannel("A")).mean() / 255.0)
    if fraction < min_subject_fraction:
        raise CleanSheetError(
            f"{label}: {remover.name} separated no subject ({fraction:.1%} of the image kept)"
        )
    coverage = f"subject covers {fraction:.0%} of the image"
    return Tier2Result(
        png_bytes=png_bytes(composite_on_gray(rgba), compress_level=CLEAN_SHEET_PNG_LEVEL),
        tier_label=remover.tier_label,
        engine=remover.name,
        model=remover.model,
        note=f"{note}; {coverage}" if note else coverage,
        subject_fraction=fraction,
    )


# --------------------------------------------------------------------------------------------
# Tier 3

_VIEWS = {
    "CHARACTER": (
        "Show the character front-facing in a full-body view, standing in a neutral pose, "
        "face fully visible"
    ),
    "ENVIRONMENT": "Show the whole place from an unobstructed viewpoint, with no people in it",
}
_DEFAULT_VIEW = "Show the whole object in a clear three-quarter view, isolated"


def build_conditioning_prompt(reverse_prompt: str | None, asset_type: str, name: str | None) -> str:
    """The plan's clean-sheet directives around the asset's own description.

    Environments keep their own surroundings (a gray backdrop would erase the subject).
    """
    kind = (asset_type or "asset").strip().upper()
    subject = f"{kind.lower()} {name.strip()!r}" if name and name.strip() else kind.lower()
    lines = [f"Create a clean reference image of the {subject} in the input image."]
    if reverse_prompt and reverse_prompt.strip():
        lines.append(f"Description: {reverse_prompt.strip()}")
    lines.append(_VIEWS.get(kind, _DEFAULT_VIEW) + ".")
    if kind != "ENVIRONMENT":
        lines.append("Plain neutral gray background (#808080), nothing else behind the subject.")
    lines += [
        "Soft, even studio lighting without harsh shadows.",
        "No occlusion: nothing covers or crops the subject.",
        "Keep every distinguishing feature exactly as in the input "
        "(face, hair, skin tone, clothing, colours, markings, proportions).",
    ]
    return "\n".join(lines)


def threshold_for_try(number: int, engine: str = "insightface") -> float:
    """A try's (1-based) face threshold on ``engine``'s own scale: insightface similarity 0.6,
    0.6, then 0.5 (the plan's); dlib distance 0.6, 0.6, then its measured relaxed value."""
    return thresholds_for(engine).for_try(number)


TryOutcome = Literal[
    "accepted",  # validated and above the threshold
    "accepted_unvalidated",  # no validation applies or no face engine: first image taken
    "below_threshold",
    "no_face",  # score 0.0
    "invalid_image",  # the model returned bytes that are not an image (billed)
    "content_policy",
    "rejected",
    "failed",
    "not_found",
    "transient",  # still failing after the transient retries
    "may_be_billed",  # sent, no answer: not resent without a person's say
]
# passed / failed: scored against the stored embedding; not_applicable: nothing to compare
# with; unavailable: no face engine (or an incompatible one); not_run: would apply, but no
# generated image reached validation (the tries stopped on errors first)
Validation = Literal["passed", "failed", "not_applicable", "unavailable", "not_run"]


@dataclass(frozen=True)
class Tier3Try:
    number: int
    score: float | None
    threshold: float | None
    cost_usd: float
    outcome: TryOutcome
    reason: str
    transient_retries: int = 0
    engine: str | None = None  # the face engine that gave ``score`` (its own scale)
    metric: str | None = None  # "cosine" (similarity) | "euclidean" (distance)


@dataclass(frozen=True)
class Tier3Outcome:
    accepted: bool
    image_png: bytes | None  # RGB PNG of the accepted image
    score: float | None  # accepted image's score; if none accepted, the best score seen
    validation: Validation
    tries: tuple[Tier3Try, ...]
    total_cost_usd: float
    prompt: str
    model: str
    reason: str
    stopped_by: str | None = None  # error kind that ended the attempts early, if any
    face_score: FaceScore | None = None  # ``score`` with its engine, metric and threshold

    @property
    def validated(self) -> bool:
        return self.validation == "passed"

    @property
    def blocked(self) -> bool:
        return self.stopped_by == "content_policy"

    def tries_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(t) for t in self.tries]


def normalize_generated_image(data: bytes, *, label: str) -> bytes:
    """Prove the model's bytes are an image; re-encode as upright RGB PNG (alpha over gray)."""
    try:
        image = ImageOps.exif_transpose(decode_image(data, label=label))
    except Image.DecompressionBombError as exc:
        raise MediaError(f"{label} is not a usable image: {exc}") from exc
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        return png_bytes(composite_on_gray(image))
    return png_bytes(image.convert("RGB"))
