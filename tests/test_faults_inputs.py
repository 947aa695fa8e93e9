"""Fault classes of user input, each handled as a class: answers of another study, values no run can use, manifest
keys of the wrong type, adapters without a recorded config, and library warnings before an error line."""

from __future__ import annotations

import csv
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error
from tests.conftest import write_image
from tests.test_study_helpers import make_images, make_manifest, read_key_rows, write_answers
from tlora_bench.study.commands import study
from tlora_bench.study.questions import QUESTIONS

# ---- 1. `study analyze`: answers of another study, duplicated rows, missing columns, unknown values -----------


def _make_study(root: Path, out: str, pairs: str = "alpha-a:beta-b", seed: int = 0, gen: str = "gen"):
    if not (root / "tiny.toml").exists():
        make_manifest(root)
    if not (root / gen).exists():
        make_images(root / gen)
    return CliRunner().invoke(study, ["make", str(root / gen), "--pairs", pairs, "--n", "4", "--raters", "1",
                                      "--seed", str(seed), "--out", str(root / out), "--manifest",
                                      str(root / "tiny.toml"), "--image-size", "32"])


def _answers_from_form(form: Path, path: Path, side: dict[str, str]) -> Path:
    """The CSV the form's Save button writes, answering `side[trial_id]` to every question: its columns and its
    study id (when the form has one) read from the page, as its JavaScript does."""
    html = form.read_text()
    rater = re.search(r'<body data-rater="([^"]+)"', html).group(1)
    study_id = re.search(r'data-study="([^"]+)"', html)
    trials = re.findall(r'data-trial="([^"]+)"', html)
    rows = [(rater, t, q.number, side[t]) for t in trials for q in QUESTIONS]
    return write_answers(path, rows, study_id.group(1) if study_id else None)


def _analyze(answers: list[Path], key: Path, out: Path):
    return CliRunner().invoke(study, ["analyze", *map(str, answers), "--key", str(key), "--out", str(out),
                                      "--bootstrap", "20"])


def _side_of(key: Path, method: str) -> dict[str, str]:
    """For each trial, the side that shows `method`."""
    return {r["trial_id"]: "left" if r["left"] == method else "right" for r in read_key_rows(key)}


def test_answers_checked_against_another_studys_key_are_refused(tmp_path: Path) -> None:
    """Two studies drawn with one seed (the pairs written the other way round) once shared their trial ids, so
    answers analyzed with the wrong key exited 0 with the opposite conclusion."""
    assert _make_study(tmp_path, "a").exit_code == 0
    assert _make_study(tmp_path, "b", pairs="beta-b:alpha-a").exit_code == 0
    key_a, key_b = tmp_path / "a" / "key.csv", tmp_path / "b" / "key.csv"
    rows_a, rows_b = read_key_rows(key_a), read_key_rows(key_b)
    assert not {r["trial_id"] for r in rows_a} & {r["trial_id"] for r in rows_b}  # ids unique per study
    study_a, study_b = rows_a[0]["study_id"], rows_b[0]["study_id"]
    assert study_a != study_b and {r["study_id"] for r in rows_a} == {study_a}
    assert f'data-study="{study_a}"' in (tmp_path / "a" / "rater-01.html").read_text()
    assert json.loads((tmp_path / "a" / "study.json").read_text())["study_id"] == study_a
    answers = _answers_from_form(tmp_path / "a" / "rater-01.html", tmp_path / "answers.csv",
                                 _side_of(key_a, "alpha-a"))  # the rater always prefers alpha-a
    result = _analyze([answers], key_b, tmp_path / "wrong")
    assert_one_line_error(result, f"{answers} row 1 belongs to study '{study_a}', not to this key's study "
                                  f"'{study_b}'")
    assert not (tmp_path / "wrong").exists()
    result = _analyze([answers], key_a, tmp_path / "right")
    assert result.exit_code == 0, result.output
    assert "4/4" in result.output  # alpha-a, the pair's first method, won every answer


def test_study_id_follows_the_images_and_a_changed_study_never_replaces_one(tmp_path: Path) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    again = tmp_path / "again"
    assert _make_study(tmp_path, "again").exit_code == 0  # same settings and images: the same study
    assert (again / "key.csv").read_text() == (tmp_path / "a" / "key.csv").read_text()
    first = read_key_rows(again / "key.csv")[0]
    write_image(tmp_path / "gen" / first["file_a"], seed=99)  # one image of the study, generated anew
    result = _make_study(tmp_path, "again")
    error = assert_one_line_error(result, f"'{again}' already holds a study", "with other images",
                                  f"it is study '{first['study_id']}'")
    assert "pass another --out" in error
    assert _make_study(tmp_path, "changed").exit_code == 0
    changed = read_key_rows(tmp_path / "changed" / "key.csv")
    assert changed[0]["study_id"] != first["study_id"]
    assert not {r["trial_id"] for r in changed} & {r["trial_id"] for r in read_key_rows(again / "key.csv")}


def test_a_key_from_before_study_ids_says_to_remake_the_study(tmp_path: Path) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    key = tmp_path / "a" / "key.csv"
    rows = read_key_rows(key)
    old = tmp_path / "old-key.csv"
    with old.open("w", newline="") as f:  # the columns an older tlora-bench wrote: no study_id
        writer = csv.DictWriter(f, [c for c in rows[0] if c != "study_id"], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    answers = write_answers(tmp_path / "old.csv", [("rater-01", r["trial_id"], q.number, "left")
                                                   for r in rows for q in QUESTIONS], None)
    assert_one_line_error(_analyze([answers], old, tmp_path / "o"), f"answer key '{old}' has no study_id column",
                          "remake the study")


def test_a_key_mixing_two_studies_is_refused(tmp_path: Path) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    key = tmp_path / "a" / "key.csv"
    text = key.read_text().splitlines()
    study_id = read_key_rows(key)[0]["study_id"]
    text[3] = text[3].replace(study_id, "0123456789abcdef")
    key.write_text("\n".join(text) + "\n")
    answers = write_answers(tmp_path / "x.csv", [("rater-01", "t0", 1, "left")], study_id)
    assert_one_line_error(_analyze([answers], key, tmp_path / "o"), f"{key} row 3: study id '0123456789abcdef' "
                                                                     f"differs from row 1's '{study_id}'")


@pytest.mark.parametrize(("header", "missing"), [
    ("rater,trial_id", "missing columns 'study_id', 'question', 'answer'"),
    ("rater,trial_id,question,answer", "missing column 'study_id'"),  # a form from before study ids
    ("study_id,rater,trial_id,answer", "missing column 'question'"),
])
def test_answer_files_missing_columns_name_them(tmp_path: Path, header: str, missing: str) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    path = tmp_path / "answers.csv"
    path.write_text(header + "\n" + ",".join("x" * len(header.split(","))) + "\n")
    study_id = read_key_rows(tmp_path / "a" / "key.csv")[0]["study_id"]
    assert_one_line_error(_analyze([path], tmp_path / "a" / "key.csv", tmp_path / "o"),
                          f"{path}: not an answer file ({missing})", f"a form of study '{study_id}' saved")


def test_duplicated_answer_rows_are_refused_naming_the_row(tmp_path: Path) -> None:
    """docs/study.md: the same (rater, trial, question) twice is refused, within a file or across files (an answer
    file passed twice), never counted twice."""
    assert _make_study(tmp_path, "a").exit_code == 0
    key = tmp_path / "a" / "key.csv"
    answers = _answers_from_form(tmp_path / "a" / "rater-01.html", tmp_path / "answers.csv",
                                 _side_of(key, "alpha-a"))
    assert_one_line_error(_analyze([answers, answers], key, tmp_path / "o"),
                          f"{answers} row 1: rater 'rater-01' answered question 1 of trial",
                          f"twice (first at {answers} row 1)")
    lines = answers.read_text().splitlines()
    doubled = tmp_path / "doubled.csv"
    doubled.write_text("\r\n".join([*lines[:3], lines[2], *lines[3:]]) + "\r\n")  # data row 2 saved twice
    assert_one_line_error(_analyze([doubled], key, tmp_path / "o"), f"{doubled} row 3: rater 'rater-01' answered "
                                                                     "question 2 of trial",
                          f"twice (first at {doubled} row 2)")


@pytest.mark.parametrize(("column", "value", "message"), [
    ("answer", "tie", "answer must be 'left' or 'right' (no ties), got 'tie'"),
    ("answer", "", "answer must be 'left' or 'right'"),
    ("answer", "l", "answer must be 'left' or 'right'"),
    ("question", "4", "question must be one of [1, 2, 3], got '4'"),
    ("question", "1.0", "question must be one of [1, 2, 3]"),
    ("question", "\u00b2", "question must be one of [1, 2, 3]"),  # a digit to str.isdigit, not to int()
    ("trial_id", "t00000000", "trial id 't00000000' is not in the answer key"),
    ("rater", "", "empty rater"),
    ("study_id", "", "empty study_id"),
])
def test_unknown_answer_values_are_one_line(tmp_path: Path, column: str, value: str, message: str) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    key = tmp_path / "a" / "key.csv"
    answers = _answers_from_form(tmp_path / "a" / "rater-01.html", tmp_path / "answers.csv",
                                 _side_of(key, "alpha-a"))
    with answers.open(newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1][column] = value
    with answers.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    assert_one_line_error(_analyze([answers], key, tmp_path / "o"), f"{answers} row 2", message)


# ---- 2. values no run can use: refused when the config is built, and by the CLI options that take them ---------


@pytest.mark.parametrize(("overrides", "message"), [
    ({"seeds": str(2**63)}, "config key 'seeds' must be an integer from 0 to 2^62"),
    ({"seeds": str(2**64)}, "config key 'seeds' must be an integer from 0 to 2^62"),
    ({"seeds": "0,-1"}, "config key 'seeds' must be an integer from 0 to 2^62 (4,611,686,018,427,387,904), got -1"),
    ({"bootstrap": str(10**12)}, "config key 'bootstrap' must be an integer from 1 to 1,000,000, got"),
    ({"bootstrap": "0"}, "config key 'bootstrap' must be an integer from 1 to 1,000,000, got 0"),
    ({"steps": "all=1000000000000"}, "config key 'steps' for 'all' must be from 1 to 1,000,000"),
    ({"images_per_prompt": str(10**9)}, "config key 'images_per_prompt' must be from 1 to 10,000"),
    ({"base_images": str(10**9)}, "config key 'base_images' must be from 1 to 10,000"),
    ({"sample_batch_size": str(10**9)}, "config key 'sample_batch_size' must be from 1 to 1,024"),
    ({"prompts": "1000"}, "config key 'prompts' must be from 1 to 32"),  # the base prompt and 31 contextual ones
    ({"checkpoint_every": str(10**30)}, "config key 'checkpoint_every' must be from 0 to 1,000,000"),
    ({"checkpoint_every": "-1"}, "config key 'checkpoint_every' must be from 0 to 1,000,000, got -1"),
    ({"ranks": "4.5"}, "config key 'ranks' must be an integer, got str '4.5'"),
    ({"r_min": "nan"}, "config key 'r_min' must be an integer, got str 'nan'"),
    ({"bootstrap": "inf"}, "config key 'bootstrap' must be an integer, got str 'inf'"),
    ({"tiny_extractors": "2"}, "config key 'tiny_extractors' must be true or false"),
])
def test_config_refuses_values_no_run_can_use(overrides: dict, message: str) -> None:
    from tlora_bench.config import load_config
    from tlora_bench.errors import TloraBenchError

    with pytest.raises(TloraBenchError) as caught:
        load_config("smoke", overrides)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("line", "message"), [
    ("bootstrap = true", "config key 'bootstrap' must be an integer, got bool True"),
    ("seeds = [true]", "config key 'seeds' must be an integer, got bool True"),
    ("ranks = [1.5]", "config key 'ranks' must be an integer, got float 1.5"),
    ("prompts = inf", "config key 'prompts' must be an integer, got float inf"),
    ("images_per_prompt = nan", "config key 'images_per_prompt' must be an integer, got float nan"),
    ("seeds = [9223372036854775807]", "config key 'seeds' must be an integer from 0 to 2^62"),
    ("gradient_checkpointing = 1", "config key 'gradient_checkpointing' must be true or false"),
    ("[steps]\nall = 1e9", "config key 'steps.all' must be an integer, got float"),
    ("[variants.late]\nmethod = 'lora-4'\nsteps = 100000000000", "variant 'late': steps must be from 1 to 1,000,000"),
    ("[variants.late]\nmethod = 'lora-4'\nbatch_size = 1000000000", "variant 'late': batch_size must be from 1 to "
                                                                    "1,024"),
    ("[variants.late]\nmethod = 'lora-4'\nlr = nan", "variant 'late': lr must be a finite number above 0, got nan"),
    ("[variants.late]\nmethod = 'lora-4'\nlr = inf", "variant 'late': lr must be a finite number above 0, got inf"),
    ("[variants.late]\nmethod = 'lora-4'\nweight_decay = -inf", "variant 'late': weight_decay must be a finite"),
    ("[variants.late]\nmethod = 'lora-4'\ntrain_images = true", "variant 'late': train_images must be an integer"),
    ("[variants.late]\nmethod = 'lora-4'\nguidance_scale = 5.0", "method 'lora' has no option 'guidance_scale'"),
])
def test_preset_values_of_the_wrong_kind_or_size_are_one_line(tmp_path: Path, line: str, message: str) -> None:
    """A preset holds typed TOML values: bools, floats, NaN and inf where integers belong, and out-of-range values,
    each named with its key; sampling settings (guidance, inference steps) are no variant option."""
    from tlora_bench.config import load_config
    from tlora_bench.errors import TloraBenchError

    preset = tmp_path / "p.toml"
    methods = '["late"]' if "variants" in line else '["lora-4"]'
    preset.write_text(f'model = "tiny"\nconcepts = "dog6"\nmethods = {methods}\n{line}\n')
    from tlora_bench.planner import make_plan

    with pytest.raises(TloraBenchError) as caught:
        make_plan(load_config(str(preset)))
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("values", [{"ranks": (True,)}, {"r_min": True}, {"bootstrap": True}, {"seeds": (False,)},
                                    {"sample_batch_size": True}, {"gradient_checkpointing": 1},
                                    {"steps": {"all": True}}])
def test_a_config_built_in_code_refuses_bools_where_ints_belong(values: dict) -> None:
    from tlora_bench.config import RunConfig
    from tlora_bench.errors import TloraBenchError

    with pytest.raises(TloraBenchError, match=f"config key '{next(iter(values))}'"):
        RunConfig(model="tiny", concepts="dog6", methods=("lora-4",), **values)


def test_bootstrap_resamples_must_fit_in_memory() -> None:
    """The cap, and below it the memory the resamples of the planned items would take."""
    from tlora_bench.errors import TloraBenchError
    from tlora_bench.limits import MAX_BOOTSTRAP, check_bootstrap

    assert check_bootstrap(MAX_BOOTSTRAP, "--bootstrap", items=25) == MAX_BOOTSTRAP
    with pytest.raises(TloraBenchError, match=r"--bootstrap must be an integer from 1 to 268,435 for 1,000 "
                                              r"resampled items \(their resamples must fit in 4 GiB\), got 1000000"):
        check_bootstrap(1_000_000, "--bootstrap", items=1000)


def test_the_seed_rule_keeps_every_image_seed_in_64_bits() -> None:
    """The largest base seed accepted still gives image seeds torch, numpy and an Int64 column hold."""
    from tlora_bench.concepts import bundled_manifest
    from tlora_bench.errors import TloraBenchError
    from tlora_bench.limits import MAX_SEED
    from tlora_bench.prompts import MAX_IMAGES_PER_PROMPT, prompt_items

    for concept in ("dog6", "teapot"):
        items = prompt_items(bundled_manifest().get(concept), base_seed=MAX_SEED,
                             images_per_prompt=MAX_IMAGES_PER_PROMPT, base_images=MAX_IMAGES_PER_PROMPT)
        assert max(item.seed for item in items) < 2**63 - 1
    with pytest.raises(TloraBenchError, match="the base seed must be an integer from 0 to 2"):
        prompt_items(bundled_manifest().get("dog6"), base_seed=MAX_SEED + 1)


def test_study_and_evaluate_seed_and_bootstrap_options_are_checked(tmp_path: Path) -> None:
    assert _make_study(tmp_path, "a").exit_code == 0
    for seed in ("-1", str(2**64)):  # numpy refused the first with a traceback; the second made a study
        result = _make_study(tmp_path, f"s{seed[:3]}", seed=seed)
        assert_one_line_error(result, "--seed must be an integer from 0 to 2^62")
        assert not (tmp_path / f"s{seed[:3]}").exists()
    key = tmp_path / "a" / "key.csv"
    answers = _answers_from_form(tmp_path / "a" / "rater-01.html", tmp_path / "answers.csv",
                                 _side_of(key, "alpha-a"))
    for option, value, message in (("--seed", "-1", "--seed must be an integer from 0 to 2^62"),
                                   ("--bootstrap", str(10**12), "--bootstrap must be an integer from 1 to 1,000,000"),
                                   ("--bootstrap", "0", "--bootstrap must be an integer from 1 to 1,000,000")):
        result = CliRunner().invoke(study, ["analyze", str(answers), "--key", str(key), option, value, "--out",
                                            str(tmp_path / "o")])
        assert_one_line_error(result, message)
    from tlora_bench.cli import main

    for option, value, message in (("--bootstrap", str(10**12), "--bootstrap must be an integer from 1 to 1,000,000"),
                                   ("--seed", "-5", "--seed must be an integer from 0 to 2^62")):
        result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "nowhere"), "--tiny-models", option, value])
        assert_one_line_error(result, message)  # before the folder is looked at: no scoring then a crash


# ---- 3. manifest keys of the wrong type: one line naming the file and the key --------------------------------

_CONCEPT = '[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\n'


@pytest.mark.parametrize(("body", "message"), [
    ('[dataset]\ndefault_set = 5\n' + _CONCEPT, "[dataset]: 'default_set' must be the name of a set, got int 5"),
    ('[dataset]\ndefault_set = ["mine"]\n' + _CONCEPT, "[dataset]: 'default_set' must be the name of a set, got list"),
    ('[dataset]\ndefault_set = {a = 1}\n' + _CONCEPT, "[dataset]: 'default_set' must be the name of a set, got dict"),
    ('[dataset]\ndefault_set = "all"\n' + _CONCEPT, "[dataset]: default_set 'all' is not a set (sets: mine)"),
    ('dataset = 5\n' + _CONCEPT, "[dataset] must be a table"),
    ('dataset = ["x"]\n' + _CONCEPT, "[dataset] must be a table"),
    ('[dataset]\nname = 5\n' + _CONCEPT, "[dataset]: name 5 is not a safe name"),
    ('[dataset]\nhomepage = 5\n' + _CONCEPT, "[dataset]: 'homepage' must be text, got int 5"),
    ('[dataset]\narchive_sha256 = ["x"]\n' + _CONCEPT, "[dataset]: 'archive_sha256' must be text, got list"),
    ('sets = 5\n' + _CONCEPT, "[sets] must be a table"),
    ('[sets]\nx = {exclude = "rex"}\n' + _CONCEPT, "set 'x': 'exclude' must be a list of concept ids, got str 'rex'"),
    ('[sets]\nx = [5]\n' + _CONCEPT, "set 'x': concept ids must be text, got int 5"),
    ('[sets]\nx = 5\n' + _CONCEPT, "set 'x': must be \"all\", a list of ids or {exclude = [ids]}, got int 5"),
    ('concepts = 5\n', "no concepts"),
    ('concepts = [5]\n', "each [[concepts]] entry must be a table"),
    ('[[concepts]]\nid = 5\nclass_word = "dog"\nimages = ["a.jpg"]\n', "concept id 5 is not a safe name"),
    ('[[concepts]]\nid = "rex"\nclass_word = 5\nimages = ["a.jpg"]\n',
     "concept 'rex': 'class_word' must be text (the class noun, e.g. class_word = \"dog\"), got int 5"),
    ('[[concepts]]\nid = "rex"\nclass_word = ["dog"]\nimages = ["a.jpg"]\n', "'class_word' must be text"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = "a.jpg"\n',
     "concept 'rex': 'images' must be a non-empty list of file names, got str 'a.jpg'"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = {a = 1}\n', "'images' must be a non-empty list"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = [1]\n', "image file name 1 is not a safe name"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\ntrain_image = 0\n',
     "concept 'rex': 'train_image' must be a file name (text), got int 0"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nlive = 1\n', "'live' must be true or false"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nsource = 5\n',
     "concept 'rex': 'source' must be text, got int 5"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nlicense = ["CC"]\n',
     "concept 'rex': 'license' must be text, got list"),
    ('[[concepts]]\nid = "rex"\nclass_word = "dog"\nimages = ["a.jpg"]\nfolder = 5\n', "'folder' must be a folder"),
])
def test_manifest_keys_of_the_wrong_type_are_one_line(tmp_path: Path, body: str, message: str) -> None:
    from tlora_bench.concepts import load_manifest
    from tlora_bench.errors import TloraBenchError

    path = tmp_path / "mine.toml"
    path.write_text(body)
    (tmp_path / "rex").mkdir()
    write_image(tmp_path / "rex" / "a.jpg")
    with pytest.raises(TloraBenchError) as caught:
        load_manifest(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value), str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_manifest_of_the_wrong_type_is_one_line_in_every_command(tmp_path: Path) -> None:
    from tlora_bench.cli import main

    path = tmp_path / "mine.toml"
    path.write_text('[dataset]\ndefault_set = ["mine"]\n' + _CONCEPT)
    for args in (["concepts", "validate", "--manifest", str(path)], ["concepts", "list", "--manifest", str(path)],
                 ["config", "--concepts", str(path), "--model", "tiny", "--methods", "lora-4"]):
        assert_one_line_error(CliRunner().invoke(main, args), str(path), "'default_set' must be the name of a set")


# ---- 4. an adapter whose recorded config is empty or incomplete: refused, never filled with defaults ----------


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory) -> Path:
    """A real adapter of the tiny model (untrained, on its skeleton), with the metadata `train` writes."""
    from tests.train_helpers import write_concepts
    from tlora_bench.adapters import attach_adapters
    from tlora_bench.adapters.io import save_adapter
    from tlora_bench.models import denoiser_skeleton
    from tlora_bench.train import TrainSpec, resolve_recipe

    root = tmp_path_factory.mktemp("adapter")
    job = TrainSpec(method="lora-4", concept="rex", model="tiny", manifest=str(write_concepts(root / "c")), steps=1)
    recipe, model = resolve_recipe(job), denoiser_skeleton("tiny")
    attach_adapters(model, recipe.adapter_config)
    return save_adapter(model, root / "good.safetensors", {"label": recipe.label, "train_spec": job.to_dict()})


def _with_metadata(good: Path, path: Path, change) -> Path:
    from safetensors.torch import load_file, safe_open, save_file

    with safe_open(str(good), framework="pt") as f:
        metadata = dict(f.metadata())
    save_file(load_file(str(good)), str(path), metadata=change(metadata))
    return path


def _drop_config_keys(*keys: str):
    def change(metadata: dict) -> dict:
        config = {k: v for k, v in json.loads(metadata["config"]).items() if k not in keys}
        return {**metadata, "config": json.dumps(config)}
    return change


@pytest.mark.parametrize(("change", "message"), [
    (lambda m: {**m, "config": "{}"}, "records no adapter config (method, target_modules, seed, r, r_min, gamma, "
                                      "mask, init,"),
    (lambda m: {**m, "config": json.dumps({"method": "lora"})}, "records no adapter config (method,"),
    (_drop_config_keys("mask"), "records no mask in its adapter config"),  # would load as a masked T-LoRA
    (_drop_config_keys("r", "alpha"), "records no r, alpha in its adapter config"),
    (lambda m: {k: v for k, v in m.items() if k != "config"}, "has no 'config' in its metadata"),
    (lambda m: {}, "is not a tlora-bench adapter file"),
])
def test_an_adapter_without_its_config_is_one_line_everywhere(tiny_adapter: Path, tmp_path: Path, change,
                                                             message: str) -> None:
    from tlora_bench.adapters.io import read_adapter_config
    from tlora_bench.cli import main
    from tlora_bench.errors import TloraBenchError

    path = _with_metadata(tiny_adapter, tmp_path / "bad.safetensors", change)
    with pytest.raises(TloraBenchError) as caught:
        read_adapter_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    if "records no" in message:
        assert "it was not written by `tlora-bench train`, or was altered" in str(caught.value)
    out = tmp_path / "images"
    for args in (["adapter", "info", str(path)], ["adapter", "rank", str(path)],
                 ["generate", str(path), "--prompts", "1", "--device", "cpu", "--out", str(out)]):
        assert_one_line_error(CliRunner().invoke(main, args), message)
    assert not out.exists()


def test_a_complete_adapter_config_still_reads(tiny_adapter: Path) -> None:
    from tlora_bench.adapters.io import read_adapter_config

    config = read_adapter_config(tiny_adapter)
    assert (config.method, config.r, config.mask, config.init) == ("lora", 4, False, "gaussian")


# ---- 5. library warnings never precede the error line of a failing command ----------------------------------


def _huge_broken_png(path: Path) -> Path:
    """A PNG whose header claims 10,000 x 10,000 px (PIL warns of a decompression bomb on opening it) and whose
    pixels are missing (decoding then fails)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def failing_inputs(tmp_path_factory, tiny_adapter: Path) -> dict[str, str]:
    """Inputs on whose way to an error line libraries warn: PIL of a decompression bomb, diffusers of a model
    folder it cannot fetch from (logged as an error before its loader raises)."""
    from tests.train_helpers import write_concepts

    root = tmp_path_factory.mktemp("failing")
    manifest = write_concepts(root / "bomb")
    (manifest.parent / "rex" / "01.jpg").unlink()
    _huge_broken_png(manifest.parent / "rex" / "01.jpg")  # the training image (its name need not match its bytes)
    (root / "model").mkdir()
    (root / "model" / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    (root / "vae").mkdir()
    (root / "vae" / "config.json").write_text('{"_class_name": "AutoencoderKL"}')  # and no weights
    spec = json.loads(__import__("safetensors").safe_open(str(tiny_adapter), "pt").metadata()["train_spec"])
    spec.update(model="sdxl", model_path=str(root / "model"), vae_path=str(root / "vae"))
    bad_adapter = _with_metadata(tiny_adapter, root / "sdxl-bad-model.safetensors",
                                 lambda m: {**m, "train_spec": json.dumps(spec)})
    make_manifest(root / "study")
    make_images(root / "study" / "gen")
    _huge_broken_png(root / "study" / "gen" / "alpha-a" / "rex" / "img_0_0.png")
    return {"BOMB": str(manifest), "MODEL": str(root / "model"), "VAE": str(root / "vae"),
            "BADMODELADAPTER": str(bad_adapter), "GEN": str(root / "study" / "gen"),
            "STUDYMANIFEST": str(root / "study" / "tiny.toml")}


FAILING = {
    "corrupt-training-image": ("train --method lora --concept rex --manifest BOMB --model tiny --out OUT",
                               "cannot read image"),
    "bad-model-folder": ("train --method lora --concept dog6 --model sdxl --model-path MODEL --vae-path VAE "
                         "--device cpu --out OUT", "cannot load model"),
    "adapter-of-a-bad-model-folder": ("generate BADMODELADAPTER --prompts 1 --device cpu --out OUT",
                                      "cannot load model"),
    "corrupt-generated-image": ("study make GEN --pairs alpha-a:beta-b --n 8 --raters 1 --manifest STUDYMANIFEST "
                                "--out OUT", "cannot read image"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAILING))
def test_a_failing_command_prints_only_its_error_line(case: str, failing_inputs: dict[str, str],
                                                      tmp_path: Path) -> None:
    command, fragment = FAILING[case]
    args = [{**failing_inputs, "OUT": str(tmp_path / "out")}.get(word, word) for word in command.split()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TLORA_BENCH_CACHE": str(tmp_path / "cache"),
           "PYTHONWARNINGS": "default"}  # every warning a library emits, as a user's shell may ask for
    done = subprocess.run([sys.executable, "-m", "tlora_bench.cli", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], done.stderr
    assert done.stdout == ""


def _warning_group():
    """A command group like the CLI's whose one command warns (Python warning and log record), then ends as told."""
    import logging
    import warnings

    import click

    from tlora_bench.cli_common import ErrorLineGroup
    from tlora_bench.errors import TloraBenchError

    @click.group(cls=ErrorLineGroup)
    def group() -> None:
        pass

    @group.command()
    @click.argument("end")
    def work(end: str) -> None:
        warnings.warn("a library deprecation", FutureWarning, stacklevel=1)
        logging.getLogger("some_library.loader").error("could not fetch weights.bin, trying another file")
        click.echo("output")
        if end == "fail":
            raise TloraBenchError("the one line naming the thing and the fix")
        if end == "incomplete":
            sys.exit(3)
        if end == "bug":
            raise RuntimeError("a bug")

    return group


def test_library_warnings_are_dropped_when_a_command_fails(caplog) -> None:
    """In-process, pytest records warnings and log records instead of printing them: what reaches its recorders
    is what a user's stderr would show (the subprocess test above checks stderr itself)."""
    import warnings

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        result = CliRunner().invoke(_warning_group(), ["work", "fail"])
    assert_one_line_error(result, "the one line naming the thing and the fix")
    assert result.stdout == "output\n" and shown == [] and "could not fetch" not in caplog.text


@pytest.mark.parametrize(("end", "code"), [("ok", 0), ("incomplete", 3), ("bug", None)])
def test_library_warnings_are_shown_after_a_command_that_ends(caplog, end: str, code: int | None) -> None:
    import logging

    with pytest.warns(FutureWarning, match="a library deprecation"):
        result = CliRunner().invoke(_warning_group(), ["work", end])
    if code is None:  # a bug: its traceback comes with every warning that led to it
        assert isinstance(result.exception, RuntimeError)
    else:
        assert result.exit_code == code, result.output
    assert "could not fetch weights.bin" in caplog.text
    logging.getLogger("some_library.loader").error("after the command")  # the hold ended with the command
    assert caplog.records[-1].getMessage() == "after the command"
