"""The generated-images layout: DIR/<method>/<concept>/images.jsonl, its writer, reader and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.metrics_helpers import BASE, JUNGLE, write_generated
from tlora_bench.errors import TloraBenchError
from tlora_bench.layout import ImageRecord, find_indexed_folders, read_images_index, write_images_index


def test_write_then_read_round_trips(tmp_path: Path):
    rows = [ImageRecord("a/00.png", BASE, 0, seed=1385, method="tlora", rank=64, prompt="a photo of a sks dog"),
            {"file": "01.png", "template": JUNGLE, "image_index": 0}]
    path = write_images_index(tmp_path, rows)
    assert path == tmp_path / "images.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"file": "a/00.png", "template": BASE, "image_index": 0, "seed": 1385, "method": "tlora",
                        "rank": 64, "prompt": "a photo of a sks dog"}
    assert lines[1] == {"file": "01.png", "template": JUNGLE, "image_index": 0, "rank": None}
    assert read_images_index(path) == [rows[0], ImageRecord("01.png", JUNGLE, 0)]


@pytest.mark.parametrize(("line", "fragment"), [
    ('{"file": "x.png", "image_index": 0}', "missing required key 'template'"),
    ('{"file": "x.png", "templte": "a {0}", "image_index": 0}', "did you mean 'template'"),
    ('{"file": "../x.png", "template": "a {0}", "image_index": 0}', "relative '/'-separated path"),
    ('{"file": "/etc/x.png", "template": "a {0}", "image_index": 0}', "relative '/'-separated path"),
    ('{"file": "x.png", "template": "a dog", "image_index": 0}', "{0} exactly once"),
    ('{"file": "x.png", "template": "a {0}", "image_index": "0"}', "'image_index' must be an integer"),
    ('{"file": "x.png", "template": "a {0}", "image_index": 0, "rank": 6.4}', "'rank' must be an integer"),
    ('{"file": "x.png", "template": "a {0}", "image_index": -1}', "must be 0 or more"),
    ('["x.png"]', "must be a JSON object"),
    ('{"file": "x.png",', "not valid JSON"),
])
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path: Path, line: str, fragment: str):
    path = tmp_path / "images.jsonl"
    path.write_text('{"file": "ok.png", "template": "a {0}", "image_index": 0}\n' + line + "\n")
    with pytest.raises(TloraBenchError) as error:
        read_images_index(path)
    message = str(error.value)
    assert fragment in message and f"{path} line 2" in message and "\n" not in message


def test_duplicates_and_empty_indexes_are_rejected(tmp_path: Path):
    with pytest.raises(TloraBenchError, match="listed twice"):
        write_images_index(tmp_path, [ImageRecord("x.png", BASE, 0), ImageRecord("x.png", BASE, 1)])
    with pytest.raises(TloraBenchError, match="share template"):
        write_images_index(tmp_path, [ImageRecord("x.png", BASE, 0), ImageRecord("y.png", BASE, 0)])
    assert not (tmp_path / "images.jsonl").exists()  # nothing half-written
    (tmp_path / "images.jsonl").write_text("\n")
    with pytest.raises(TloraBenchError, match="lists no images"):
        read_images_index(tmp_path / "images.jsonl")


def test_discovery_finds_method_and_concept_folders_and_skips_others(tmp_path: Path):
    write_generated(tmp_path, "tlora-64", "dog6", {BASE: 1})
    write_generated(tmp_path, "lora", "dog6", {BASE: 1, JUNGLE: 1})
    write_generated(tmp_path, ".hidden", "dog6", {BASE: 1})
    write_generated(tmp_path, "evaluation", "dog6", {BASE: 1})
    (tmp_path / "notes").mkdir()
    found = find_indexed_folders(tmp_path, skip=[tmp_path / "evaluation"])
    assert [(f.method_label, f.concept_id, len(f.records)) for f in found] == [("lora", "dog6", 2),
                                                                            ("tlora-64", "dog6", 1)]


def test_discovery_errors_point_to_the_layout(tmp_path: Path):
    with pytest.raises(TloraBenchError, match="does not exist"):
        find_indexed_folders(tmp_path / "nope")
    with pytest.raises(TloraBenchError, match=r"<method>/<concept>/images\.jsonl"):
        find_indexed_folders(tmp_path)
    folder = write_generated(tmp_path, "lora", "dog6", {BASE: 1})
    with pytest.raises(TloraBenchError, match="two levels up"):
        find_indexed_folders(folder)
    with pytest.raises(TloraBenchError, match="one level up"):
        find_indexed_folders(folder.parent)
