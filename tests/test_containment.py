"""Concept and generated images are read only from inside their folder; docs and code agree on
names, image formats, --data-dir with --manifest and the default dataset name."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.conftest import TINY_MANIFEST, make_tiny_dataset, write_image
from tests.metrics_helpers import BASE, make_concepts, write_generated
from tlora_bench.cli import main
from tlora_bench.concepts import check_concepts, load_image, load_manifest, load_mask
from tlora_bench.concepts.manifest import DATA_DIR_WITH_MANIFEST, IMAGE_SUFFIXES
from tlora_bench.errors import EXIT_INCOMPLETE, TloraBenchError

needs_symlinks = pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _one_line(message: str) -> str:
    assert "\n" not in message
    return message


def _user_project(tmp_path: Path) -> Path:
    """tiny.toml beside rex/ and mug/ folders (folders relative to the manifest)."""
    make_tiny_dataset(tmp_path, {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg", "02.jpg"]},
                      mask_for="01.jpg")
    manifest = tmp_path / "tiny.toml"
    manifest.write_text(TINY_MANIFEST)
    return manifest


# ---- symlinks out of a concept folder --------------------------------------------------------------------


@needs_symlinks
def test_a_symlink_out_of_the_concept_folder_is_refused_in_one_line(tmp_path: Path):
    manifest = _user_project(tmp_path / "project")
    outside = write_image(tmp_path / "elsewhere" / "secret.jpg")
    link = tmp_path / "project" / "mug" / "02.jpg"
    link.unlink()
    link.symlink_to(outside)
    concept = load_manifest(manifest).get("mug")
    with pytest.raises(TloraBenchError) as e:
        concept.image_paths(None)
    message = _one_line(str(e.value))
    assert str(link) in message and f"folder '{concept.dir(None)}'" in message and "outside" in message
    with pytest.raises(TloraBenchError, match="outside its folder"):
        load_image(link)  # the loader refuses it too: its default folder is the one it is named in
    assert load_manifest(manifest).get("rex").image_paths(None)[0].name == "00.jpg"  # other concepts unaffected


@needs_symlinks
def test_symlinked_training_image_and_mask_are_refused(tmp_path: Path):
    manifest = _user_project(tmp_path / "project")
    rex = tmp_path / "project" / "rex"
    (rex / "01.jpg").unlink()
    (rex / "01.jpg").symlink_to(write_image(tmp_path / "elsewhere" / "a.jpg"))
    concept = load_manifest(manifest).get("rex")
    with pytest.raises(TloraBenchError, match=r"01\.jpg"):
        concept.train_image_path(None)
    mask = rex / "01_mask.png"
    mask.rename(tmp_path / "elsewhere" / "m.png")
    mask.symlink_to(tmp_path / "elsewhere" / "m.png")
    with pytest.raises(TloraBenchError, match=r"01_mask\.png"):
        concept.mask_path(None)
    with pytest.raises(TloraBenchError, match="outside its folder"):
        load_mask(mask)


@needs_symlinks
def test_a_symlink_that_stays_inside_the_folder_is_fine(tmp_path: Path):
    manifest = _user_project(tmp_path / "project")
    mug = tmp_path / "project" / "mug"
    (mug / "02.jpg").unlink()
    (mug / "02.jpg").symlink_to(mug / "00.jpg")
    concept = load_manifest(manifest).get("mug")
    assert [p.name for p in concept.image_paths(None)] == ["00.jpg", "01.jpg", "02.jpg"]
    assert load_image(concept.image_paths(None)[2]).size == (16, 16)


@needs_symlinks
def test_validate_reports_the_symlink_and_goes_on(tmp_path: Path):
    manifest = _user_project(tmp_path / "project")
    link = tmp_path / "project" / "mug" / "02.jpg"
    link.unlink()
    link.symlink_to(write_image(tmp_path / "elsewhere" / "x.jpg"))
    problems = check_concepts(load_manifest(manifest).concepts.values(), None)
    assert len(problems) == 1 and problems[0].startswith("mug: ") and str(link) in problems[0]
    result = run("concepts", "validate", "--manifest", str(manifest))
    assert result.exit_code == 1
    assert "outside its folder" in result.stderr and "1 problems in 2 concepts" in result.stderr


@needs_symlinks
def test_evaluate_refuses_a_symlinked_real_image(tmp_path: Path):
    manifest = make_concepts(tmp_path)
    real = tmp_path / "data" / "mug" / "02.png"
    real.rename(tmp_path / "stolen.png")
    real.symlink_to(tmp_path / "stolen.png")
    gen = tmp_path / "gen"
    write_generated(gen, "lora", "mug", {BASE: 2})
    result = run("evaluate", str(gen), "--manifest", str(manifest), "--tiny-models", "--device", "cpu")
    assert result.exit_code == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and str(real) in errors[0]


@needs_symlinks
def test_evaluate_refuses_a_generated_image_linked_from_outside_its_folder(tmp_path: Path):
    manifest = make_concepts(tmp_path)
    gen = tmp_path / "gen"
    folder = write_generated(gen, "lora", "rex", {BASE: 3})
    link = folder / "prompt00" / "02.png"
    link.rename(tmp_path / "outside.png")
    link.symlink_to(tmp_path / "outside.png")
    result = run("evaluate", str(gen), "--manifest", str(manifest), "--tiny-models", "--device", "cpu")
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert f"image '{link}'" in result.stderr and f"outside its folder '{folder}'" in result.stderr
    assert "scored 2 images" in result.stdout


# ---- manifest folders outside the manifest's root --------------------------------------------------------


def _manifest_with_folder(tmp_path: Path, folder: str, root: str | None = None) -> Path:
    write_image(tmp_path / "elsewhere" / "rex" / "00.jpg")
    project = tmp_path / "project"
    project.mkdir(exist_ok=True)
    path = project / "mine.toml"
    dataset = f'[dataset]\nroot = "{root}"\n\n' if root is not None else ""
    path.write_text(f'{dataset}[[concepts]]\nid = "rex"\nclass_word = "dog"\nfolder = "{folder}"\n')
    return path


@pytest.mark.parametrize("folder", ["../elsewhere/rex", "ABSOLUTE"])
def test_a_folder_outside_the_manifest_is_refused(tmp_path: Path, folder: str):
    folder = (tmp_path / "elsewhere" / "rex").as_posix() if folder == "ABSOLUTE" else folder
    path = _manifest_with_folder(tmp_path, folder)
    with pytest.raises(TloraBenchError) as e:
        load_manifest(path)
    message = _one_line(str(e.value))
    assert message.startswith(f"{path}: concept 'rex': folder '{folder}'") and "[dataset] root" in message


def test_an_explicit_root_lets_folders_live_there(tmp_path: Path):
    path = _manifest_with_folder(tmp_path, "rex", root="../elsewhere")
    assert load_manifest(path).get("rex").dir(None) == (tmp_path / "elsewhere" / "rex").resolve()
    absolute = _manifest_with_folder(tmp_path, (tmp_path / "elsewhere" / "rex").as_posix(), root="../elsewhere")
    assert load_manifest(absolute).get("rex").images == ("00.jpg",)
    write_image(tmp_path / "project" / "rex" / "00.jpg")
    outside_root = _manifest_with_folder(tmp_path, "../project/rex", root="../elsewhere")
    with pytest.raises(TloraBenchError, match="outside"):
        load_manifest(outside_root)


@needs_symlinks
def test_a_folder_symlinked_out_of_the_manifest_root_is_refused(tmp_path: Path):
    path = _manifest_with_folder(tmp_path, "rex")
    (tmp_path / "project" / "rex").symlink_to(tmp_path / "elsewhere" / "rex")
    with pytest.raises(TloraBenchError, match="outside"):
        load_manifest(path)


@pytest.mark.parametrize("value", ["5", "true", "[\"a\"]", "\"\""])
def test_a_root_of_the_wrong_type_is_one_line_naming_the_key(tmp_path: Path, value: str):
    make_tiny_dataset(tmp_path, {"rex": ["00.jpg"]})
    path = tmp_path / "bad.toml"
    path.write_text(f'[dataset]\nroot = {value}\n\n[[concepts]]\nid = "rex"\nclass_word = "dog"\n')
    with pytest.raises(TloraBenchError) as e:
        load_manifest(path)
    assert _one_line(str(e.value)).startswith(f"{path}: [dataset]: 'root' must be a folder path")


def test_a_bundled_style_manifest_keeps_folders_inside_the_data_root(tmp_path: Path):
    path = tmp_path / "m.toml"
    path.write_text('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["00.jpg"]\nfolder = "../x"\n')
    with pytest.raises(TloraBenchError, match="relative path inside the data folder"):
        load_manifest(path, user=False)


# ---- docs and code agree ---------------------------------------------------------------------------------


def test_ids_with_a_colon_are_refused_as_documented(tmp_path: Path):
    path = tmp_path / "m.toml"
    path.write_text('[[concepts]]\nid = "my:dog"\nclass_word = "dog"\nimages = ["00.jpg"]\n')
    with pytest.raises(TloraBenchError, match="not a safe name"):
        load_manifest(path)
    readme = (Path(__file__).parents[1] / "concepts" / "README.md").read_text()
    assert "letters, digits, _ - . :" not in readme


def test_gifs_are_listed_and_read_as_their_first_frame_in_rgb(tmp_path: Path):
    assert ".gif" in IMAGE_SUFFIXES and ".webp" in IMAGE_SUFFIXES and ".tiff" in IMAGE_SUFFIXES
    folder = tmp_path / "rex"
    folder.mkdir()
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(folder / "a.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    write_image(folder / "b.webp", fmt="WEBP")
    path = tmp_path / "m.toml"
    path.write_text('[[concepts]]\nid = "rex"\nclass_word = "dog"\n')
    concept = load_manifest(path).get("rex")
    assert concept.images == ("a.gif", "b.webp")
    image = load_image(concept.image_paths(None)[0])
    assert image.mode == "RGB" and image.size == (8, 8)
    assert tuple(np.asarray(image)[0, 0]) == (255, 0, 0)  # the first frame, not the last


def test_a_manifest_file_name_with_spaces_gets_a_safe_default_name(tmp_path: Path):
    make_tiny_dataset(tmp_path, {"rex": ["00.jpg"]})
    path = tmp_path / "my concepts (v2).toml"
    path.write_text('[[concepts]]\nid = "rex"\nclass_word = "dog"\n')
    manifest = load_manifest(path)
    assert manifest.name == "my-concepts--v2-" and manifest.default_set == manifest.name
    assert [c.id for c in manifest.select(None)] == ["rex"]
    named = tmp_path / "named.toml"
    named.write_text('[dataset]\nname = "has space"\n\n[[concepts]]\nid = "rex"\nclass_word = "dog"\n')
    with pytest.raises(TloraBenchError, match="not a safe name"):  # a name the user wrote is still checked
        load_manifest(named)


@pytest.mark.parametrize("command", [["concepts", "validate"], ["concepts", "show", "rex"], ["evaluate", "GEN"]])
def test_data_dir_with_a_user_manifest_is_a_one_line_error(tmp_path: Path, command: list[str]):
    manifest = _user_project(tmp_path)
    gen = tmp_path / "gen"
    write_generated(gen, "lora", "rex", {BASE: 1})
    args = [str(gen) if a == "GEN" else a for a in command]
    result = run(*args, "--manifest", str(manifest), "--data-dir", str(tmp_path))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"error: {DATA_DIR_WITH_MANIFEST}"
    if command[0] == "concepts":  # without --data-dir the same command works
        assert run(*args, "--manifest", str(manifest)).exit_code == 0
