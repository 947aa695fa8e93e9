from __future__ import annotations

import functools
import hashlib
import http.server
import json
import socket
import threading
import zipfile
from pathlib import Path

import pytest

from tests.conftest import make_tiny_dataset
from tlora_bench.concepts import download_dataset, load_manifest
from tlora_bench.errors import TloraBenchError

FILES = {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg", "02.jpg"]}


def _archive(tmp_path: Path, files=FILES, prefix="tiny-main/dataset", extra: str | None = None) -> Path:
    source = make_tiny_dataset(tmp_path / "src", files)
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("tiny-main/README.md", "not data")
        for path in sorted(source.rglob("*.jpg")):
            zf.write(path, f"{prefix}/{path.relative_to(source).as_posix()}")
        if extra:
            zf.writestr(extra, "evil")
    return archive


@pytest.fixture
def manifest(tiny_manifest_file: Path):
    return load_manifest(tiny_manifest_file, user=False)


def test_download_from_file_url_verifies_and_unpacks(tmp_path: Path, manifest):
    archive = _archive(tmp_path)
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    dest = download_dataset(manifest, dest=tmp_path / "data", url=archive.as_uri(), sha256=sha)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")) == [
        "mug/00.jpg", "mug/01.jpg", "mug/02.jpg", "rex/00.jpg", "rex/01.jpg"]
    assert not (dest / "README.md").exists()  # only the archive_root folder is unpacked
    record = json.loads((dest / "DOWNLOAD.json").read_text())
    assert record["sha256"] == sha and record["sha256_pinned"] is True
    # A complete copy is kept; a second call does not fetch (the URL is gone now).
    archive.unlink()
    assert download_dataset(manifest, dest=dest, url=archive.as_uri()) == dest


def test_download_over_local_http(tmp_path: Path, manifest):
    archive = _archive(tmp_path)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
        dest = download_dataset(manifest, dest=tmp_path / "data", url=url)
    finally:
        server.shutdown()
    assert (dest / "rex" / "01.jpg").is_file()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_failed_download_is_one_line_and_points_to_data_dir(tmp_path: Path, manifest):
    url = f"http://127.0.0.1:{_closed_port()}/tiny.zip"
    with pytest.raises(TloraBenchError, match=r"could not download .* pass --data-dir") as info:
        download_dataset(manifest, dest=tmp_path / "data", url=url, timeout=5)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "data").exists()


def test_checksum_mismatch_installs_nothing(tmp_path: Path, manifest):
    archive = _archive(tmp_path)
    with pytest.raises(TloraBenchError, match="checksum mismatch"):
        download_dataset(manifest, dest=tmp_path / "data", url=archive.as_uri(), sha256="0" * 64)
    assert not (tmp_path / "data").exists()
    assert list(tmp_path.glob(".data.*")) == []  # no staging leftovers


def test_incomplete_archive_is_refused(tmp_path: Path, manifest):
    archive = _archive(tmp_path, files={"rex": ["00.jpg", "01.jpg"]})
    with pytest.raises(TloraBenchError, match=r"incomplete .*mug"):
        download_dataset(manifest, dest=tmp_path / "data", url=archive.as_uri())
    assert not (tmp_path / "data").exists()


def test_zip_slip_is_refused(tmp_path: Path, manifest):
    archive = _archive(tmp_path, extra="tiny-main/dataset/../../evil.txt")
    with pytest.raises(TloraBenchError, match="unsafe path"):
        download_dataset(manifest, dest=tmp_path / "data", url=archive.as_uri())
    assert not (tmp_path / "evil.txt").exists()


def test_not_an_archive(tmp_path: Path, manifest):
    page = tmp_path / "page.html"
    page.write_text("<html>404</html>")
    with pytest.raises(TloraBenchError, match="neither a zip nor a tar"):
        download_dataset(manifest, dest=tmp_path / "data", url=page.as_uri())


def test_bundled_manifest_pins_the_public_archive():
    from tlora_bench.concepts import bundled_manifest

    dataset = bundled_manifest().dataset
    commit = dataset["archive_url"].rsplit("/", 1)[1].removesuffix(".zip")
    assert dataset["archive_url"].startswith("https://github.com/google/dreambooth/archive/")
    assert len(commit) == 40 and dataset["archive_root"] == f"dreambooth-{commit}/dataset"


def test_cli_download_of_the_bundled_set_warns_that_an_unpinned_archive_is_unverified(tmp_path: Path):
    from click.testing import CliRunner

    from tlora_bench.cli import main
    from tlora_bench.concepts import bundled_manifest

    manifest = bundled_manifest()
    source = manifest.path.parent  # the checkout's concepts/ folder: the same files the public archive holds
    archive = tmp_path / "dreambooth.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for concept in manifest.concepts.values():
            for name in concept.images:
                zf.write(source / concept.id / name, f"{manifest.dataset['archive_root']}/{concept.id}/{name}")
    result = CliRunner().invoke(main, ["concepts", "download", "--url", archive.as_uri(),
                                       "--dest", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert "could not be verified" in result.output and digest in result.output
