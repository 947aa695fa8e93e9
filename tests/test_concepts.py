from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_tiny_dataset, write_image
from tlora_bench.concepts import (
    bundled_manifest,
    check_concepts,
    load_manifest,
    resolve_data_root,
    select_concepts,
)
from tlora_bench.errors import TloraBenchError

# docs/decisions.md section 7, written out independently of the manifest: id -> (class, live, training image).
DATASET_TABLE = """
backpack backpack no 02 | backpack_dog backpack no 00 | bear_plushie stuffed_animal no 03
berry_bowl bowl no 00 | can can no 04 | candle candle no 04 | cat cat yes 03 | cat2 cat yes 00
clock clock no 03 | colorful_sneaker sneaker no 01 | dog dog yes 02 | dog2 dog yes 02 | dog3 dog yes 00
dog5 dog yes 03 | dog6 dog yes 02 | dog7 dog yes 01 | dog8 dog yes 01 | duck_toy toy no 01
fancy_boot boot no 02 | grey_sloth_plushie stuffed_animal no 01 | monster_toy toy no 00
pink_sunglasses glasses no 05 | poop_emoji toy no 00 | rc_car toy no 03 | red_cartoon cartoon no 01
robot_toy toy no 01 | shiny_sneaker sneaker no 04 | teapot teapot no 00 | vase vase no 02
wolf_plushie stuffed_animal no 04
"""


def _reference() -> dict[str, tuple[str, bool, str]]:
    rows = [r.split() for r in DATASET_TABLE.strip().replace("\n", " | ").split("|")]
    return {cid: (cls.replace("_", " "), live == "yes", f"{train}.jpg") for cid, cls, live, train in rows}


def test_bundled_manifest_matches_reference_table():
    manifest = bundled_manifest()
    reference = _reference()
    assert len(reference) == 30
    assert {cid: (c.class_word, c.live, c.train_image) for cid, c in manifest.concepts.items()} == reference
    assert all(c.source and c.license for c in manifest.concepts.values())


def test_manifest_matches_data_folder(data_root: Path):
    manifest = bundled_manifest()
    folders = sorted(p.name for p in data_root.iterdir() if p.is_dir())
    assert folders == sorted(manifest.concepts)
    for concept in manifest.concepts.values():
        on_disk = sorted(p.name for p in concept.dir(data_root).glob("*.jpg"))
        assert list(concept.images) == on_disk, concept.id
        assert all(p.is_file() for p in concept.image_paths(data_root))
        assert concept.mask_path(data_root) is not None, f"{concept.id} has no training mask"


@pytest.mark.slow
def test_bundled_data_decodes(data_root: Path):
    assert check_concepts(bundled_manifest().concepts.values(), data_root) == []


def test_named_sets():
    manifest = bundled_manifest()
    assert len(manifest.select("dreambooth30")) == 30
    default = manifest.select(None)
    assert manifest.default_set == "dreambooth25" and len(default) == 25
    assert {"dog3", "dog5", "dog7", "dog8", "shiny_sneaker"}.isdisjoint(c.id for c in default)
    assert sum(c.live for c in default) == 5


def test_select_mixes_ids_and_sets_without_duplicates():
    _, chosen = select_concepts("dog6, cat,dog6")
    assert [c.id for c in chosen] == ["dog6", "cat"]


def test_unknown_concept_suggests_the_closest():
    with pytest.raises(TloraBenchError, match=r"unknown concept or concept set 'dgo6'; did you mean 'dog6'\?"):
        select_concepts("dgo6")
    with pytest.raises(TloraBenchError, match="did you mean 'teapot'"):
        bundled_manifest().get("teapott")


def _manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "mine.toml"
    path.write_text(body)
    return path


def test_user_manifest_lists_folder_images(tmp_path: Path):
    make_tiny_dataset(tmp_path, {"rex": ["b.png", "a.jpg"]}, mask_for="a.jpg")
    manifest = load_manifest(_manifest(tmp_path, '[[concepts]]\nid = "rex"\nclass_word = "dog"\nlive = true\n'))
    (rex,) = manifest.select(None)
    assert rex.images == ("a.jpg", "b.png") and rex.train_image == "a.jpg"  # masks are not images
    assert rex.dir(None) == (tmp_path / "rex").resolve()
    assert rex.mask_path(None) is not None
    assert check_concepts([rex], None) == []


def test_user_manifest_reports_corrupt_image(tmp_path: Path):
    make_tiny_dataset(tmp_path, {"rex": ["a.jpg"]})
    (tmp_path / "rex" / "b.jpg").write_bytes(b"not an image")
    manifest = load_manifest(_manifest(tmp_path, '[[concepts]]\nid = "rex"\nclass_word = "dog"\n'))
    problems = check_concepts(manifest.select(None), None)
    assert len(problems) == 1 and "b.jpg" in problems[0] and "cannot read image" in problems[0]


@pytest.mark.parametrize("body, message", [
    ('[[concepts]]\nid = "../etc"\nclass_word = "dog"\nimages = ["a.jpg"]\n', "not a safe name"),
    ('[[concepts]]\nid = "/abs"\nclass_word = "dog"\nimages = ["a.jpg"]\n', "not a safe name"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["../../x.jpg"]\n', "not a safe name"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\n' * 2, "duplicate concept id 'rex'"),
    ('[[concepts]]\nid = "rex"\nclas_word = "dog"\nimages = ["a.jpg"]\n', "did you mean 'class_word'"),
    ('[[concepts]]\nid = "rex"\nimages = ["a.jpg"]\n', "'class_word' is required"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nlive = "yes"\nimages = ["a.jpg"]\n', "'live' must be"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\ntrain_image = "b.jpg"\n',
     "train_image 'b.jpg' is not one of"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\n', "no images found"),
    ('[sets]\nx = ["rex2"]\n[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\n',
     "unknown concept 'rex2'"),
    ('title = 1\n[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\n', "unknown key 'title'"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nprompts = "lve"\n',
     "unknown prompt set 'lve'; did you mean 'live'"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nprompts = "base"\n',
     "unknown prompt set 'base'"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nprompts = 3\n',
     "'prompts' must be a prompt set"),
    ("[[concepts]\n", "is not valid TOML"),
    ("", "no concepts"),
])
def test_bad_manifests_name_the_problem(tmp_path: Path, body: str, message: str):
    with pytest.raises(TloraBenchError, match=message) as info:
        load_manifest(_manifest(tmp_path, body))
    assert "\n" not in str(info.value) and "mine.toml" in str(info.value)


def test_data_root_resolution_order(tmp_path: Path, monkeypatch):
    flag, env, cache = (tmp_path / name for name in ("flag", "env", "cache"))
    for folder in (flag, env, cache / "datasets" / "dreambooth"):
        folder.mkdir(parents=True)
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(cache))
    monkeypatch.setenv("TLORA_BENCH_DATA", str(env))
    assert resolve_data_root(flag) == flag
    assert resolve_data_root(None) == env
    monkeypatch.delenv("TLORA_BENCH_DATA")
    import tlora_bench.concepts.data_root as data_root

    assert resolve_data_root(None) == data_root.bundled_concept_images()  # a checkout's concepts/ folder
    monkeypatch.setattr(data_root, "bundled_concept_images", lambda: None)  # an installed wheel
    assert resolve_data_root(None) == cache / "datasets" / "dreambooth"


def test_missing_data_folder_says_where_it_came_from_and_the_fix(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TLORA_BENCH_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(TloraBenchError, match=r"from \$TLORA_BENCH_DATA\) does not exist; run `tlora-bench "
                                              r"concepts download`"):
        resolve_data_root(None)


def test_check_concepts_finds_missing_and_mismatched_files(tmp_path: Path, tiny_manifest_file: Path):
    manifest = load_manifest(tiny_manifest_file, user=False)
    make_tiny_dataset(tmp_path / "data", {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg"]})
    write_image(tmp_path / "data" / "rex" / "01_mask.png", size=8)
    problems = check_concepts(manifest.concepts.values(), tmp_path / "data")
    assert any("02.jpg' is missing" in p for p in problems)
    assert any("mask" in p and "8x8" in p for p in problems)
    assert len(problems) == 2
