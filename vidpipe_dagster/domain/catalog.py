"""The model catalog: what each video and image model accepts, what it costs, and whether it can
still be used, loaded from one data file (``model_catalog.yaml`` in this package, or a file a user
points ``VIDPIPE_MODEL_CATALOG`` at).

Pure: ``load_catalog(path)`` and ``catalog_from_data(mapping)`` validate the whole file up front
(every problem names the entry and field) and return an immutable ``ModelCatalog`` that answers
the questions the pipeline asks: capabilities, price, lifecycle, why a choice is invalid, and what
a content-policy support code means. Every rule and price lives in the data; nothing here is a
number about a model.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

Status = Literal["ga", "preview", "retired"]
STATUSES: tuple[Status, ...] = ("ga", "preview", "retired")
PACKAGED_CATALOG = "model_catalog.yaml"


class CatalogError(ValueError):
    """The catalog file is unusable; the message names the file, the entry and the field."""


class ModelChoiceError(ValueError):
    """A model, resolution or take count the catalog rules out; the message is the reason."""


@dataclass(frozen=True)
class Lifecycle:
    """Where a model stands: GA, preview or retired (``retired_on`` may be announced ahead)."""

    status: Status
    retired_on: date | None = None
    replacement: str | None = None
    note: str = ""

    def retired(self, today: date | None = None) -> bool:
        """Shut down on ``today``: from the retirement date on (the date decides, so an
        announced retirement applies on its day), else by status."""
        if self.retired_on is not None:
            return self.retired_on <= (today or date.today())
        return self.status == "retired"

    def describe(self, today: date | None = None) -> str:
        """``"GA"``, ``"preview"``, ``"retired on 2026-06-30 (use veo-3.1-generate-001)"``."""
        if self.retired(today):
            when = f" on {self.retired_on.isoformat()}" if self.retired_on else ""
            use = f" (use {self.replacement})" if self.replacement else ""
            return f"retired{when}{use}"
        label = "GA" if self.status == "ga" else "preview"
        if self.retired_on is not None:
            label += f", retires on {self.retired_on.isoformat()}"
        return label


@dataclass(frozen=True)
class AudioPrices:
    """USD per generated second at one resolution; ``None`` where the model cannot do it."""

    audio: float | None
    silent: float | None


@dataclass(frozen=True)
class VideoModel:
    """One video model's rules and prices (see ``model_catalog.yaml`` for each field)."""

    id: str
    name: str
    lifecycle: Lifecycle
    durations: tuple[int, ...]
    resolutions: tuple[str, ...]
    aspect_ratios: tuple[str, ...]
    max_reference_images: int
    last_frame: bool
    frames_with_references: bool
    audio: bool
    audio_optional: bool
    max_samples: int
    price_per_second: Mapping[str, AudioPrices]
    reference_duration: int | None = None
    resolution_durations: Mapping[str, int] = field(default_factory=dict)
    reference_types: tuple[str, ...] = ("asset",)

    @property
    def supports_references(self) -> bool:
        return self.max_reference_images > 0

    def allowed_durations(self, resolution: str, *, with_references: bool) -> tuple[int, ...]:
        """The durations a request at ``resolution`` may ask for (8 s only with references, and
        at 1080p/4k, where the catalog says so)."""
        allowed = set(self.durations)
        if with_references and self.reference_duration is not None:
            allowed &= {self.reference_duration}
        if resolution in self.resolution_durations:
            allowed &= {self.resolution_durations[resolution]}
        return tuple(sorted(allowed))

    def duration_rule(self, resolution: str, *, with_references: bool) -> str | None:
        """Why the duration is fixed for such a request, in words; ``None`` if it is not."""
        reasons = []
        if with_references and self.reference_duration is not None:
            reasons.append("reference images attached")
        if resolution in self.resolution_durations:
            reasons.append(f"{resolution} output")
        return " and ".join(reasons) or None

    def price_for(self, resolution: str, generate_audio: bool) -> float:
        """USD per second; a model without audio is priced silent whatever is asked."""
        prices = self.price_per_second.get(resolution)
        if prices is None:
            offered = ", ".join(self.price_per_second)
            raise ModelChoiceError(f"no price for {self.id} at {resolution} (priced: {offered})")
        audio = generate_audio and self.audio
        price = prices.audio if audio else prices.silent
        if price is None:
            price = prices.silent if audio else prices.audio
        if price is None:  # the loader guarantees one of the two
            raise ModelChoiceError(f"no price for {self.id} at {resolution}")
        return price

    def highest_price_per_second(self) -> float:
        return max(p for prices in self.price_per_second.values() for p in _both(prices))

    def choice_problems(
        self,
        *,
        resolution: str | None = None,
        takes: int | None = None,
        today: date | None = None,
    ) -> list[str]:
        """Why this model cannot be used at this resolution with this many takes (empty: it can)."""
        problems = []
        if self.lifecycle.retired(today):
            problems.append(f"{self.id} is {self.lifecycle.describe(today)}")
        if resolution is not None and resolution not in self.resolutions:
            problems.append(
                f"{self.id} does not offer resolution {resolution} "
                f"(it offers {', '.join(self.resolutions)})"
            )
        if takes is not None and not 1 <= takes <= self.max_samples:
            problems.append(
                f"{self.id} makes 1 to {self.max_samples} takes per request, not {takes}"
            )
        return problems


@dataclass(frozen=True)
class ImageModel:
    """One image model (Tier 3 clean sheets): input limit, price per output size, lifecycle."""

    id: str
    name: str
    lifecycle: Lifecycle
    max_input_images: int
    default_size: str
    price_per_image: Mapping[str, float]

    def price(self, size: str | None = None) -> float:
        wanted = size or self.default_size
        try:
            return self.price_per_image[wanted]
        except KeyError:
            offered = ", ".join(self.price_per_image)
            raise ModelChoiceError(
                f"no price for {self.id} at size {wanted} (priced: {offered})"
            ) from None


@dataclass(frozen=True)
class SafetyCategory:
    """A group of support codes; ``prompt_rewrite_fixes`` says whether remediation may help."""

    key: str
    name: str
    codes: tuple[str, ...]
    prompt_rewrite_fixes: bool
    what_to_change: str = ""


@dataclass(frozen=True)
class UnknownFamily:
    """Model ids matching ``pattern`` are refused with ``reason`` until the catalog lists them."""

    pattern: str
    reason: str


@dataclass(frozen=True)
class FilterVerdict:
    """What a content-policy outcome means: its categories, and whether it was the audio filter."""

    codes: tuple[str, ...]
    categories: tuple[SafetyCategory, ...]
    audio_only: bool
    code_categories: Mapping[str, str] = field(default_factory=dict)  # code -> category key

    @property
    def unfixable(self) -> tuple[SafetyCategory, ...]:
        """Categories a prompt rewrite cannot fix (stop at once)."""
        return tuple(c for c in self.categories if not c.prompt_rewrite_fixes)

    def describe(self) -> str:
        """``"Child (58061214)"``, ``"audio filter"``, or ``"no category given"``."""
        if self.audio_only:
            return "audio filter"
        parts = []
        for category in self.categories:
            codes = [c for c in self.codes if self.code_categories.get(c) == category.key]
            parts.append(f"{category.name} ({', '.join(codes)})" if codes else category.name)
        return "; ".join(parts) or "no category given"

    def advice(self) -> str:
        """What to change, for the categories a rewrite cannot fix."""
        return " ".join(c.what_to_change for c in self.unfixable if c.what_to_change)


@dataclass(frozen=True)
class ModelCatalog:
    """Every video and image model rule and price, with the support-code categories."""

    video_models: Mapping[str, VideoModel]
    image_models: Mapping[str, ImageModel]
    categories: Mapping[str, SafetyCategory]
    unknown_video_families: tuple[UnknownFamily, ...] = ()
    audio_filter_patterns: tuple[re.Pattern[str], ...] = ()
    source: str = PACKAGED_CATALOG
    checked: date | None = None

    # -- video ------------------------------------------------------------------------------

    def find_video_model(self, model: str) -> VideoModel | None:
        return self.video_models.get(model)

    def video_model(self, model: str, *, today: date | None = None) -> VideoModel:
        """The entry for a model a request may be sent to; raises ``ModelChoiceError`` with the
        reason for an unknown, not-yet-known or retired one."""
        entry = self.video_models.get(model)
        if entry is None:
            raise ModelChoiceError(self.unknown_video_reason(model, today))
        if entry.lifecycle.retired(today):
            raise ModelChoiceError(f"video model {model} is {entry.lifecycle.describe(today)}")
        return entry

    def unknown_video_reason(self, model: str, today: date | None = None) -> str:
        for family in self.unknown_video_families:
            if fnmatch.fnmatchcase(model, family.pattern):
                return f"video model {model!r}: {family.reason}"
        usable = sorted(m.id for m in self.video_models.values() if not m.lifecycle.retired(today))
        return f"unknown video model {model!r}; known models: {', '.join(usable)}"

    def video_choice_problems(
        self,
        model: str,
        *,
        resolution: str | None = None,
        takes: int | None = None,
        today: date | None = None,
    ) -> list[str]:
        """Why this model / resolution / take count cannot be used (empty: it can)."""
        entry = self.video_models.get(model)
        if entry is None:
            return [self.unknown_video_reason(model, today)]
        return entry.choice_problems(resolution=resolution, takes=takes, today=today)

    def video_price_per_second(self, model: str, resolution: str, generate_audio: bool) -> float:
        """List price, retired models included (old ledger rows are still priced)."""
        entry = self.video_models.get(model)
        if entry is None:
            raise ModelChoiceError(
                f"no price for video model {model!r}; priced models: "
                + ", ".join(sorted(self.video_models))
            )
        return entry.price_for(resolution, generate_audio)

    def highest_video_price_per_second(self, resolution: str | None = None) -> float:
        """What an unpriceable video second is assumed to cost (budgets err on the safe side):
        the highest price at ``resolution`` (any resolution when none lists it)."""
        at = [
            p
            for m in self.video_models.values()
            for res, prices in m.price_per_second.items()
            if res == resolution
            for p in _both(prices)
        ]
        if at:
            return max(at)
        return max((m.highest_price_per_second() for m in self.video_models.values()), default=0.0)

    def with_video_model(self, model: VideoModel) -> ModelCatalog:
        """A copy with ``model`` added or replaced (tests, and callers adding a tuned model)."""
        return dataclasses.replace(self, video_models={**self.video_models, model.id: model})

    # -- images -----------------------------------------------------------------------------

    def image_model(self, model: str, *, today: date | None = None) -> ImageModel:
        entry = self.image_models.get(model)
        if entry is None:
            known = ", ".join(sorted(self.image_models))
            raise ModelChoiceError(f"unknown image model {model!r}; known models: {known}")
        if entry.lifecycle.retired(today):
            raise ModelChoiceError(f"image model {model} is {entry.lifecycle.describe(today)}")
        return entry

    # -- content policy ---------------------------------------------------------------------

    def category_of(self, code: str) -> SafetyCategory | None:
        return next((c for c in self.categories.values() if code in c.codes), None)

    def classify_filter(self, message: str, codes: Sequence[str]) -> FilterVerdict:
        """The categories of a content-policy outcome's support codes (unlisted codes count as
        "other"); with no code at all, whether its reason is the audio filter's."""
        found: dict[str, SafetyCategory] = {}
        assigned: dict[str, str] = {}
        for code in codes:
            category = self.category_of(code) or self.categories.get("other")
            if category is not None:
                found.setdefault(category.key, category)
                assigned[code] = category.key
        audio = not codes and any(p.search(message) for p in self.audio_filter_patterns)
        return FilterVerdict(tuple(codes), tuple(found.values()), audio, assigned)


def _both(prices: AudioPrices) -> Iterable[float]:
    return [p for p in (prices.audio, prices.silent) if p is not None]


# -- loading ------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def packaged_catalog() -> ModelCatalog:
    """The catalog shipped in this package (parsed once per process)."""
    text = resources.files(__package__).joinpath(PACKAGED_CATALOG).read_text(encoding="utf-8")
    return catalog_from_data(_parse(text, PACKAGED_CATALOG), source=PACKAGED_CATALOG)


def catalog_at(path: str | Path | None) -> ModelCatalog:
    """The packaged catalog (``None``) or a user's file, parsed once per version of the file."""
    if path is None:
        return packaged_catalog()
    resolved = Path(path).expanduser().resolve()
    return _cached_file(resolved, resolved.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _cached_file(path: Path, mtime_ns: int) -> ModelCatalog:
    """``mtime_ns`` keys the cache, so an edited file is read again."""
    return load_catalog(path)


def load_catalog(path: str | Path) -> ModelCatalog:
    """A user's catalog file, validated whole (it replaces the packaged one, it does not patch)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"cannot read the model catalog {path}: {exc}") from exc
    return catalog_from_data(_parse(text, str(path)), source=str(path))


def _parse(text: str, source: str) -> Any:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: faster
    try:
        return yaml.load(text, Loader=loader)  # a safe loader: plain data only
    except yaml.YAMLError as exc:
        raise CatalogError(f"model catalog {source} is not valid YAML: {exc}") from exc


def catalog_from_data(data: Any, *, source: str = "catalog data") -> ModelCatalog:
    """Validate parsed catalog data; every problem is reported at once, one per line."""
    reader = _Reader(source)
    catalog = reader.catalog(data)
    if reader.problems:
        raise CatalogError(
            f"model catalog {source} is invalid:\n" + "\n".join(f"  {p}" for p in reader.problems)
        )
    assert catalog is not None
    return catalog


_VIDEO_FIELDS = {
    "name",
    "status",
    "retired_on",
    "replacement",
    "note",
    "durations",
    "resolutions",
    "aspect_ratios",
    "reference_images",
    "reference_types",
    "last_frame",
    "frames_with_references",
    "audio",
    "audio_optional",
    "max_samples",
    "fixed_duration",
    "price_per_second",
}
_IMAGE_FIELDS = {
    "name",
    "status",
    "retired_on",
    "replacement",
    "note",
    "max_input_images",
    "default_size",
    "price_per_image",
}
_TOP_FIELDS = {
    "catalog_version",
    "checked",
    "video_models",
    "unknown_video_models",
    "image_models",
    "safety_categories",
    "audio_filter",
}


class _Reader:
    """Collects every problem with its path (``video_models.veo-x.durations``) before failing."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def bad(self, where: str, message: str) -> None:
        self.problems.append(f"{where}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.bad(where, "expected a mapping")
            return {}
        if allowed is not None:
            for key in sorted(set(map(str, value)) - allowed):
                self.bad(f"{where}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})")
        return {str(k): v for k, v in value.items()}

    def required(self, entry: dict[str, Any], key: str, where: str) -> Any:
        if key not in entry:
            self.bad(f"{where}.{key}", "required")
        return entry.get(key)

    def boolean(self, entry: dict[str, Any], key: str, where: str) -> bool:
        value = self.required(entry, key, where)
        if value is not None and not isinstance(value, bool):
            self.bad(f"{where}.{key}", f"expected true or false, got {value!r}")
        return bool(value)

    def count(self, value: Any, where: str, *, minimum: int = 0) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.bad(where, f"expected a whole number >= {minimum}, got {value!r}")
            return minimum
        return value

    def price(self, value: Any, where: str) -> float | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            self.bad(where, f"expected a price in USD >= 0, got {value!r}")
            return None
        return float(value)

    def strings(self, value: Any, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not value:
            self.bad(where, "expected a non-empty list")
            return ()
        return tuple(str(v) for v in value)

    def day(self, value: Any, where: str) -> date | None:
        if value is None or isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            self.bad(where, f"expected a date YYYY-MM-DD, got {value!r}")
            return None

    def lifecycle(self, entry: dict[str, Any], where: str) -> Lifecycle:
        status = self.required(entry, "status", where)
        if status not in STATUSES:
            self.bad(f"{where}.status", f"expected one of {', '.join(STATUSES)}, got {status!r}")
            status = "retired"
        retired_on = self.day(entry.get("retired_on"), f"{where}.retired_on")
        if status == "retired" and retired_on is None:
            self.bad(f"{where}.retired_on", "a retired model needs its retirement date")
        replacement = entry.get("replacement")
        return Lifecycle(
            status=status,
            retired_on=retired_on,
            replacement=str(replacement) if replacement else None,
            note=str(entry.get("note") or "").strip(),
        )

    def catalog(self, data: Any) -> ModelCatalog | None:
        top = self.mapping(data, "(top level)", _TOP_FIELDS)
        version = top.get("catalog_version")
        if version != 1:
            self.bad("catalog_version", f"expected 1, got {version!r}")
        videos = {
            str(key): self.video(str(key), value)
            for key, value in self.mapping(
                self.required(top, "video_models", "(top level)"), "video_models"
            ).items()
        }
        images = {
            str(key): self.image(str(key), value)
            for key, value in self.mapping(
                self.required(top, "image_models", "(top level)"), "image_models"
            ).items()
        }
        categories = self.categories(self.required(top, "safety_categories", "(top level)"))
        unknown = self.unknown_families(top.get("unknown_video_models") or [])
        audio = self.mapping(top.get("audio_filter") or {}, "audio_filter", {"reason_patterns"})
        patterns = []
        for i, pattern in enumerate(audio.get("reason_patterns") or []):
            try:
                patterns.append(re.compile(str(pattern), re.IGNORECASE))
            except re.error as exc:
                self.bad(f"audio_filter.reason_patterns[{i}]", f"not a regular expression: {exc}")
        return ModelCatalog(
            video_models=videos,
            image_models=images,
            categories=categories,
            unknown_video_families=tuple(unknown),
            audio_filter_patterns=tuple(patterns),
            source=self.source,
            checked=self.day(top.get("checked"), "checked"),
        )

    def video(self, key: str, value: Any) -> VideoModel:
        where = f"video_models.{key}"
        entry = self.mapping(value, where, _VIDEO_FIELDS)
        durations = tuple(
            self.count(d, f"{where}.durations", minimum=1)
            for d in self.required(entry, "durations", where) or []
        )
        if not durations:
            self.bad(f"{where}.durations", "expected a non-empty list of seconds")
        resolutions = self.strings(
            self.required(entry, "resolutions", where), f"{where}.resolutions"
        )
        aspect_ratios = self.strings(
            self.required(entry, "aspect_ratios", where), f"{where}.aspect_ratios"
        )
        audio = self.boolean(entry, "audio", where)
        audio_optional = self.boolean(entry, "audio_optional", where)
        max_refs = self.count(
            self.required(entry, "reference_images", where), f"{where}.reference_images"
        )
        fixed = self.mapping(
            entry.get("fixed_duration") or {},
            f"{where}.fixed_duration",
            {"reference_images", "resolutions"},
        )
        reference_duration = None
        if fixed.get("reference_images") is not None:
            reference_duration = self.count(
                fixed["reference_images"], f"{where}.fixed_duration.reference_images", minimum=1
            )
            if reference_duration not in durations:
                self.bad(f"{where}.fixed_duration.reference_images", "not one of the durations")
        resolution_durations: dict[str, int] = {}
        for res, seconds in self.mapping(
            fixed.get("resolutions") or {}, f"{where}.fixed_duration.resolutions"
        ).items():
            spot = f"{where}.fixed_duration.resolutions.{res}"
            if res not in resolutions:
                self.bad(spot, "not one of the model's resolutions")
            resolution_durations[res] = self.count(seconds, spot, minimum=1)
            if resolution_durations[res] not in durations:
                self.bad(spot, "not one of the durations")
        prices: dict[str, AudioPrices] = {}
        table = self.mapping(
            self.required(entry, "price_per_second", where), f"{where}.price_per_second"
        )
        for res in resolutions:
            spot = f"{where}.price_per_second.{res}"
            if res not in table:
                self.bad(spot, "every resolution needs a price")
                continue
            pair = self.mapping(table[res], spot, {"audio", "silent"})
            prices[res] = AudioPrices(
                self.price(pair.get("audio"), f"{spot}.audio"),
                self.price(pair.get("silent"), f"{spot}.silent"),
            )
            if audio and prices[res].audio is None:
                self.bad(f"{spot}.audio", "required: the model generates audio")
            if (audio_optional or not audio) and prices[res].silent is None:
                self.bad(f"{spot}.silent", "required: the model can generate without audio")
        for res in set(table) - set(resolutions):
            self.bad(f"{where}.price_per_second.{res}", "not one of the model's resolutions")
        return VideoModel(
            id=key,
            name=str(entry.get("name") or key),
            lifecycle=self.lifecycle(entry, where),
            durations=durations,
            resolutions=resolutions,
            aspect_ratios=aspect_ratios,
            max_reference_images=max_refs,
            last_frame=self.boolean(entry, "last_frame", where),
            frames_with_references=self.boolean(entry, "frames_with_references", where),
            audio=audio,
            audio_optional=audio_optional,
            max_samples=self.count(
                self.required(entry, "max_samples", where), f"{where}.max_samples", minimum=1
            ),
            price_per_second=prices,
            reference_duration=reference_duration,
            resolution_durations=resolution_durations,
            reference_types=tuple(entry.get("reference_types") or ("asset",)),
        )

    def image(self, key: str, value: Any) -> ImageModel:
        where = f"image_models.{key}"
        entry = self.mapping(value, where, _IMAGE_FIELDS)
        table = self.mapping(
            self.required(entry, "price_per_image", where), f"{where}.price_per_image"
        )
        prices = {
            str(size): self.price(price, f"{where}.price_per_image.{size}")
            for size, price in table.items()
        }
        default_size = str(self.required(entry, "default_size", where))
        if table and default_size not in prices:
            self.bad(f"{where}.default_size", f"{default_size!r} has no price")
        return ImageModel(
            id=key,
            name=str(entry.get("name") or key),
            lifecycle=self.lifecycle(entry, where),
            max_input_images=self.count(
                self.required(entry, "max_input_images", where),
                f"{where}.max_input_images",
                minimum=1,
            ),
            default_size=default_size,
            price_per_image={k: v for k, v in prices.items() if v is not None},
        )

    def categories(self, value: Any) -> dict[str, SafetyCategory]:
        found: dict[str, SafetyCategory] = {}
        seen_codes: dict[str, str] = {}
        for key, raw in self.mapping(value, "safety_categories").items():
            where = f"safety_categories.{key}"
            entry = self.mapping(
                raw, where, {"name", "codes", "prompt_rewrite_fixes", "what_to_change"}
            )
            codes = self.strings(self.required(entry, "codes", where), f"{where}.codes")
            for code in codes:
                if not code.isdigit():
                    self.bad(f"{where}.codes", f"support code {code!r} is not a number")
                if code in seen_codes:
                    self.bad(f"{where}.codes", f"code {code} is also listed in {seen_codes[code]}")
                seen_codes[code] = key
            fixes = self.boolean(entry, "prompt_rewrite_fixes", where)
            advice = str(entry.get("what_to_change") or "").strip()
            if not fixes and not advice:
                self.bad(f"{where}.what_to_change", "required when a rewrite cannot fix it")
            found[key] = SafetyCategory(
                key=key,
                name=str(entry.get("name") or key),
                codes=codes,
                prompt_rewrite_fixes=fixes,
                what_to_change=advice,
            )
        if found and "other" not in found:
            self.bad("safety_categories.other", "required (unlisted codes count as other)")
        return found

    def unknown_families(self, value: Any) -> list[UnknownFamily]:
        families = []
        if not isinstance(value, list):
            self.bad("unknown_video_models", "expected a list")
            return families
        for i, raw in enumerate(value):
            where = f"unknown_video_models[{i}]"
            entry = self.mapping(raw, where, {"pattern", "reason"})
            pattern = self.required(entry, "pattern", where)
            reason = self.required(entry, "reason", where)
            if pattern and reason:
                families.append(UnknownFamily(str(pattern), " ".join(str(reason).split())))
        return families
