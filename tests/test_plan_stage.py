"""The plan stage: one typed plan per config, registries as the only lists, no torch before a model is needed."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from tlora_bench.adapters import METHODS
from tlora_bench.adapters.layer import layer_table
from tlora_bench.config import load_config, preset_names
from tlora_bench.errors import TloraBenchError
from tlora_bench.models import BACKENDS, BackendSpec, backend_names, backend_spec, register_backend
from tlora_bench.planner import make_plan
from tlora_bench.specs import resolve_recipe


@pytest.mark.parametrize("command", ["config --preset paper-table2", "presets", "concepts list",
                                     "run --preset paper-table2 --dry-run --out OUT"])
def test_commands_that_only_read_names_import_no_torch(command, tmp_path):
    code = ("import sys\nfrom tlora_bench.cli import main\n"
            f"try:\n    main({command.replace('OUT', str(tmp_path / 'run')).split()!r})\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_preset_plans_and_every_job_recipe_is_what_resolving_its_spec_gives():
    for name in preset_names():
        plan = make_plan(load_config(name, {"seeds": "0,1"}))
        for job in plan.jobs:
            assert job.recipe == resolve_recipe(job.train), job.id


def test_a_label_always_carries_its_size_and_ranks_are_integers():
    plan = make_plan(load_config(None, {"methods": "tlora,lora,oft,gsoft,svdiff", "model": "sdxl",
                                        "ranks": "4", "concepts": "dog6"}))
    assert [v.label for v in plan.variants] == ["tlora-4", "lora-4", "oft-32", "gsoft-64", "svdiff"]
    assert [v.rank for v in plan.variants] == [4, 4, None, None, None]
    assert [v.recipe.size for v in plan.variants] == [4, 4, 32, 64, None]
    assert all(isinstance(v.rank, int) for v in plan.variants if v.rank is not None)


def test_the_backend_default_precision_is_used_when_the_config_sets_none():
    assert make_plan(load_config(None, {"model": "tiny-flux", "concepts": "dog6", "methods": "lora-4"})).precision \
        == "fp32"
    flux = make_plan(load_config(None, {"model": "flux", "concepts": "dog6", "methods": "lora-4"}))
    assert flux.precision == "bf16" and {job.train.precision for job in flux.jobs} == {"bf16"}
    assert make_plan(load_config(None, {"model": "flux", "concepts": "dog6", "methods": "lora-4",
                                        "precision": "fp32"})).precision == "fp32"


def test_building_a_config_checks_only_its_own_fields():
    config = load_config(None, {"methods": "no-such-method", "model": "no-such-model"})  # names: the plan's job
    with pytest.raises(TloraBenchError, match="config key 'model'"):
        make_plan(config)
    with pytest.raises(TloraBenchError, match="ranks"):
        load_config(None, {"ranks": "0"})


@pytest.mark.parametrize("name", backend_names())
def test_bundled_layer_tables_are_the_skeletons(name):
    spec = backend_spec(name)
    assert spec.bundled_table, f"backend '{name}' has no bundled layer table"
    assert list(spec.layer_table()) == layer_table(spec.build_skeleton()), (
        "a bundled layer table is stale: run `python -m tlora_bench.models.layer_tables`")


@pytest.fixture
def registered_backend():
    names = []

    def register(spec: BackendSpec) -> BackendSpec:
        names.append(spec.name)
        return register_backend(spec)

    yield register
    for name in names:
        BACKENDS.unregister(name)


def test_a_backend_without_a_skeleton_is_an_error_never_another_models_shapes(registered_backend):
    registered_backend(replace(backend_spec("tiny-sdxl"), name="no-skeleton", aliases=(), skeleton=None,
                               bundled_table=False))
    with pytest.raises(TloraBenchError, match="'no-skeleton' names no skeleton"):
        make_plan(load_config(None, {"model": "no-skeleton", "methods": "lora-4", "concepts": "dog6"}))


def test_a_backend_with_a_skeleton_is_checked_on_its_own_shapes(registered_backend):
    registered_backend(replace(backend_spec("tiny-sdxl"), name="tiny-copy", aliases=(), bundled_table=False))
    make_plan(load_config(None, {"model": "tiny-copy", "methods": "lora-64", "concepts": "dog6"}))
    with pytest.raises(TloraBenchError, match="rank r=65 is impossible"):
        make_plan(load_config(None, {"model": "tiny-copy", "methods": "lora-65", "concepts": "dog6"}))


def test_method_families_are_attributes_of_the_specs():
    families = {name: METHODS.get(name).family for name in METHODS.names()}
    assert families == {"lora": "low-rank", "vanilla-tlora": "low-rank", "ortho-lora": "low-rank",
                        "tlora": "low-rank", "oft": "orthogonal", "gsoft": "orthogonal", "svdiff": "spectral"}


def _broken_skeleton():
    raise RuntimeError("no such architecture\nat all")


def test_a_failing_skeleton_builder_is_one_line_naming_the_backend(registered_backend):
    registered_backend(replace(backend_spec("tiny-sdxl"), name="broken-skeleton", aliases=(), bundled_table=False,
                               skeleton=_broken_skeleton))
    with pytest.raises(TloraBenchError) as error:
        make_plan(load_config(None, {"model": "broken-skeleton", "methods": "lora-4", "concepts": "dog6"}))
    message = str(error.value)
    assert "\n" not in message and "'broken-skeleton'" in message and "RuntimeError: no such architecture" in message
