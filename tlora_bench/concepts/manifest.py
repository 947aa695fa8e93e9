"""Concept manifests: the bundled DreamBooth one and users' own, parsed and validated the same way.

A manifest is a TOML file with an optional `[dataset]` table, optional named `[sets]` and a list of
`[[concepts]]`. Concept ids become folder names of results, so they are restricted to safe characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tlora_bench.errors import TloraBenchError, did_you_mean, unknown_name_error
from tlora_bench.fileio import read_toml

# Letters, digits, '_', '-', '.', starting with a letter or digit: no '/', no '..', nothing absolute.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MASK_SUFFIX = "_mask.png"

_DATASET_KEYS = {"name", "description", "homepage", "license", "archive_url", "archive_root",
                 "archive_sha256", "default_set", "root"}
_CONCEPT_KEYS = {"id", "class_word", "live", "train_image", "images", "source", "license", "folder", "prompts"}


@dataclass(frozen=True)
class Concept:
    """One subject to personalize: a folder of images, one of which is the training image."""

    id: str
    class_word: str  # the class noun that follows the token V* in prompts ("sks dog")
    live: bool  # live subjects (pets) take the paper's live prompt set, others the object set
    train_image: str  # file name of the single training image (docs/decisions.md section 7)
    images: tuple[str, ...]  # every image of the subject: the real set for IS and DINO-IS
    source: str = ""
    license: str = ""
    folder: str = ""  # relative to the data root, or absolute (user manifests); default: the id
    prompts: str = ""  # its contextual prompt set (a bundled name or a .txt path); "": live or object by `live`

    def dir(self, data_root: Path | None) -> Path:
        folder = Path(self.folder or self.id)
        if folder.is_absolute():
            return folder
        if data_root is None:
            raise TloraBenchError(f"concept '{self.id}' lives under the data folder, but none was given; "
                                  "pass --data-dir or set TLORA_BENCH_DATA")
        return Path(data_root) / folder

    def image_paths(self, data_root: Path | None) -> list[Path]:
        folder = self.dir(data_root)
        return [contained(folder, name) for name in self.images]

    def train_image_path(self, data_root: Path | None) -> Path:
        return contained(self.dir(data_root), self.train_image)

    def mask_path(self, data_root: Path | None, image: str | None = None) -> Path | None:
        """The ground-truth mask of an image (default: the training image), or None when absent."""
        stem = Path(image or self.train_image).stem
        path = contained(self.dir(data_root), f"{stem}{MASK_SUFFIX}")
        return path if path.is_file() else None


def is_inside(path: str | Path, folder: str | Path) -> bool:
    """Whether `path`, symlinks resolved, is `folder` (resolved) or lies under it."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def check_inside(path: str | Path, folder: str | Path | None = None) -> Path:
    """The path, refused in one line when it resolves (through a symlink) outside `folder` (default: the folder
    it is named in): images are read only from inside their own folder."""
    path = Path(path)
    folder = path.parent if folder is None else Path(folder)
    if not is_inside(path, folder):
        raise TloraBenchError(f"image '{path}' resolves to '{path.resolve()}', outside its folder '{folder}'; "
                              "copy the file into the folder instead of linking to it")
    return path


def contained(folder: str | Path, name: str | Path) -> Path:
    """folder / name, refused (one line naming both) when it resolves outside the folder, e.g. through a symlink:
    images are read only from inside their own folder."""
    return check_inside(Path(folder) / name, folder)


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest: its concepts in file order, its named sets, and where its data comes from."""

    name: str
    path: Path
    concepts: Mapping[str, Concept]
    sets: Mapping[str, tuple[str, ...]]
    default_set: str
    dataset: Mapping[str, str]  # the [dataset] table: homepage, license, archive_url, ...

    def get(self, concept_id: str) -> Concept:
        if concept_id not in self.concepts:
            raise unknown_name_error("concept", concept_id, self.concepts)
        return self.concepts[concept_id]

    def select(self, spec: str | None = None) -> list[Concept]:
        """Concepts named by a set name, or by comma-separated ids and set names; None: the default set."""
        names = [s.strip() for s in (spec or self.default_set).split(",") if s.strip()]
        if not names:
            raise TloraBenchError("no concepts selected; name a set (e.g. dreambooth25) or concept ids")
        chosen: dict[str, Concept] = {}
        for name in names:
            if name in self.sets:
                chosen.update((cid, self.concepts[cid]) for cid in self.sets[name])
            elif name in self.concepts:
                chosen[name] = self.concepts[name]
            else:
                raise unknown_name_error("concept or concept set", name, [*self.concepts, *self.sets])
        return list(chosen.values())


def _fail(path: Path, where: str, message: str) -> TloraBenchError:
    return TloraBenchError(f"{path}: {where}{message}")


def _check_keys(path: Path, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            raise _fail(path, where, f"unknown key '{key}'{did_you_mean(key, allowed)}")


def _got(value: Any) -> str:
    """A wrong value for a message: its TOML-facing type and a short repr."""
    text = " ".join(repr(value).split())
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _text(path: Path, where: str, table: Mapping[str, Any], key: str, default: str = "", what: str = "text") -> str:
    """The string value of `key`, or one line naming the key: a number or list is never quietly str()-ed."""
    value = table.get(key, default)
    if not isinstance(value, str):
        raise _fail(path, where, f"'{key}' must be {what}, got {_got(value)}")
    return value


def is_safe_name(value: Any) -> bool:
    """A name that can be a folder of results: no path separator, no '..', nothing absolute."""
    return isinstance(value, str) and _SAFE_NAME.fullmatch(value) is not None


def _safe_name(path: Path, where: str, what: str, value: Any) -> str:
    if not is_safe_name(value):
        raise _fail(path, where, f"{what} {value!r} is not a safe name: use letters, digits, '_', '-', '.', "
                                 "starting with a letter or digit, with no '/' or '..'")
    return value


def default_name(path: Path) -> str:
    """A manifest's name when [dataset] name is not set: its file stem, unsafe characters made '-'
    ("my concepts.toml" -> "my-concepts")."""
    name = re.sub(r"[^A-Za-z0-9_.\-]", "-", path.stem).lstrip("_.-")[:128]
    return name or "concepts"


DATA_DIR_WITH_MANIFEST = ("--data-dir does not apply to a user manifest; its folders are relative to the manifest "
                          "(set [dataset] root)")


def refuse_data_dir_with_manifest(manifest_path: str | None, data_dir: str | None) -> None:
    """A user manifest locates its own folders: an explicit --data-dir beside it is an error, not ignored."""
    if manifest_path and data_dir:
        raise TloraBenchError(DATA_DIR_WITH_MANIFEST)


def _list_images(folder: Path) -> tuple[str, ...]:
    if not folder.is_dir():
        return ()
    return tuple(sorted(p.name for p in folder.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.endswith(MASK_SUFFIX)))


def _parse_concept(path: Path, raw: Any, base_dir: Path | None) -> Concept:
    if not isinstance(raw, Mapping):
        raise _fail(path, "", "each [[concepts]] entry must be a table")
    cid = _safe_name(path, "", "concept id", raw.get("id"))
    where = f"concept '{cid}': "
    _check_keys(path, where, raw, _CONCEPT_KEYS)
    if "class_word" not in raw:
        raise _fail(path, where, "'class_word' is required: the class noun, e.g. class_word = \"dog\"")
    class_word = _text(path, where, raw, "class_word", what="text (the class noun, e.g. class_word = \"dog\")")
    if not class_word.strip():
        raise _fail(path, where, "'class_word' is required: the class noun, e.g. class_word = \"dog\"")
    live = raw.get("live", False)
    if not isinstance(live, bool):
        raise _fail(path, where, f"'live' must be true or false, got {live!r}")
    folder = raw.get("folder", cid)
    if not isinstance(folder, str) or not folder:
        raise _fail(path, where, f"'folder' must be a folder path (text), got {folder!r}")
    if base_dir is not None:  # user manifests: folders are relative to the manifest (or its root)
        resolved = (base_dir / folder).resolve()
        if not resolved.is_relative_to(base_dir):
            raise _fail(path, where, f"folder '{folder}' resolves to '{resolved}', outside '{base_dir}'; "
                                     "move it there, or set [dataset] root = \"...\" to a folder that holds it")
        folder = str(resolved)
    elif Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise _fail(path, where, f"folder '{folder}' must be a relative path inside the data folder")
    images = raw.get("images")
    if images is None and base_dir is not None:
        images = _list_images(Path(folder))
        if not images:
            raise _fail(path, where, f"no images found in '{folder}'; put the concept's images there "
                                     "or list them with images = [...]")
    if not isinstance(images, (list, tuple)) or not images:
        raise _fail(path, where, f"'images' must be a non-empty list of file names, got {_got(images)}")
    images = tuple(_safe_name(path, where, "image file name", name) for name in images)
    if len(set(images)) != len(images):
        raise _fail(path, where, "'images' lists a file twice")
    train_image = _text(path, where, raw, "train_image", images[0], what="a file name (text)")
    if train_image not in images:
        raise _fail(path, where, f"train_image '{train_image}' is not one of its images {list(images)}")
    return Concept(id=cid, class_word=class_word.strip(), live=live, train_image=train_image, images=images,
                   source=_text(path, where, raw, "source"), license=_text(path, where, raw, "license"),
                   folder=folder, prompts=_prompt_set(path, where, raw, base_dir))


def _prompt_set(path: Path, where: str, raw: Mapping[str, Any], base_dir: Path | None) -> str:
    """A concept's `prompts`: a bundled set's name, or a .txt file of templates (relative to the manifest)."""
    from tlora_bench.prompts import BUNDLED_SETS

    name = _text(path, where, raw, "prompts", what="a prompt set (a bundled name or a .txt file)")
    if name.endswith(".txt"):
        return str((base_dir or path.parent) / name)
    if name and (name not in BUNDLED_SETS or name == "base"):
        contextual = [s for s in BUNDLED_SETS if s != "base"]
        raise _fail(path, where, f"unknown prompt set '{name}'{did_you_mean(name, contextual)} (bundled: "
                                 f"{', '.join(contextual)}; or a .txt file of templates)")
    return name


def _parse_sets(path: Path, raw: Any, ids: list[str]) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise _fail(path, "", "[sets] must be a table of set name = \"all\" | [ids] | {exclude = [ids]}")
    sets: dict[str, tuple[str, ...]] = {}
    for name, spec in raw.items():
        _safe_name(path, "", "set name", name)
        where = f"set '{name}': "
        if spec == "all":
            named, members = [], list(ids)
        elif isinstance(spec, list):
            named = members = list(spec)
        elif isinstance(spec, Mapping) and set(spec) == {"exclude"}:
            if not isinstance(spec["exclude"], list):  # a string would be read as a list of letters
                raise _fail(path, where, f"'exclude' must be a list of concept ids, got {_got(spec['exclude'])}")
            named = list(spec["exclude"])
            members = [cid for cid in ids if cid not in named]
        else:
            raise _fail(path, where, f"must be \"all\", a list of ids or {{exclude = [ids]}}, got {_got(spec)}")
        for cid in named:
            if not isinstance(cid, str):
                raise _fail(path, where, f"concept ids must be text, got {_got(cid)}")
            if cid not in ids:
                raise _fail(path, f"set '{name}': ", f"unknown concept '{cid}'{did_you_mean(cid, ids)}")
        sets[name] = tuple(members)
    return sets


def load_manifest(path: str | Path, *, user: bool = True) -> Manifest:
    """Parse and validate a manifest. `user` manifests resolve folders relative to the file."""
    path = Path(path)
    raw = read_toml(path)
    _check_keys(path, "", raw, {"dataset", "sets", "concepts"})
    dataset = raw.get("dataset", {})
    if not isinstance(dataset, Mapping):
        raise _fail(path, "", f"[dataset] must be a table (name = \"...\", root = \"...\"), got {_got(dataset)}")
    _check_keys(path, "[dataset]: ", dataset, _DATASET_KEYS)
    for key in _DATASET_KEYS - {"name", "root", "default_set"}:  # those three have their own messages below
        _text(path, "[dataset]: ", dataset, key)
    root = dataset.get("root", ".")
    if not isinstance(root, str) or not root:
        raise _fail(path, "[dataset]: ", f"'root' must be a folder path (text), got {root!r}")
    base_dir = (path.parent / root).resolve() if user else None
    entries = raw.get("concepts")
    if not isinstance(entries, list) or not entries:
        raise _fail(path, "", "no concepts: add at least one [[concepts]] entry with id, class_word, images")
    concepts: dict[str, Concept] = {}
    for entry in entries:
        concept = _parse_concept(path, entry, base_dir)
        if concept.id in concepts:
            raise _fail(path, "", f"duplicate concept id '{concept.id}'; every id must be unique")
        concepts[concept.id] = concept
    sets = _parse_sets(path, raw.get("sets", {}), list(concepts))
    overlap = set(sets) & set(concepts)
    if overlap:
        raise _fail(path, "", f"set name '{sorted(overlap)[0]}' is also a concept id; rename one of them")
    name = _safe_name(path, "[dataset]: ", "name", dataset.get("name", default_name(path)))
    if not sets:  # a user manifest without [sets]: one set, named after the manifest, of every concept
        sets[name] = tuple(concepts)
    default_set = _text(path, "[dataset]: ", dataset, "default_set", name, what="the name of a set")
    if default_set not in sets:
        raise _fail(path, "[dataset]: ", f"default_set '{default_set}' is not a set{did_you_mean(default_set, sets)} "
                                         f"(sets: {', '.join(sets)})")
    return Manifest(name=name, path=path, concepts=MappingProxyType(concepts),
                    sets=MappingProxyType(sets), default_set=default_set,
                    dataset=MappingProxyType({k: str(v) for k, v in dataset.items()}))


@functools.cache
def bundled_manifest() -> Manifest:
    """The DreamBooth manifest shipped with the package (folders relative to the data root)."""
    from tlora_bench.resources import bundled_path

    with bundled_path("concepts", "dreambooth.toml") as path:
        return load_manifest(path, user=False)


def manifest_for(path: str | Path | None) -> Manifest:
    """A user manifest file, or (None) the bundled DreamBooth manifest: the one place that chooses."""
    return load_manifest(path) if path else bundled_manifest()


SYNTHETIC_CONCEPTS = "synthetic"  # the synthetic track's concepts, rendered on first use (docs/synthetic.md)


def manifest_path_of(spec: str | None) -> str | None:
    """The user manifest a --concepts value names (a path ending in .toml, or `synthetic`: the synthetic
    concepts' manifest, rendered into the cache on first use), or None: set names or ids of the bundled
    manifest. The one place that tells them apart."""
    if spec == SYNTHETIC_CONCEPTS:
        from tlora_bench.synthetic.concepts import concepts_manifest

        return str(concepts_manifest())
    return spec if spec and spec.endswith(".toml") else None


def select_concepts(spec: str | None = None) -> tuple[Manifest, list[Concept]]:
    """Resolve a --concepts value: a path to a user manifest (.toml), or set names / ids of the bundled one."""
    path = manifest_path_of(spec)
    manifest = manifest_for(path)
    return manifest, manifest.select(None if path else spec)
