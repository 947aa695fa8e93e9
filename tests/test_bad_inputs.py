"""Bad input through the real CLI, as a user would type it: each case exits non-zero with one `error:` line, no
traceback, and leaves no file behind. Each runs as a subprocess; the table is the point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_image

CASES = {
    # run: every value checked before anything is written or loaded
    "run-unknown-method": "run --preset smoke --methods tlroa --out OUT",
    "run-impossible-oft": "run --preset smoke --methods oft-7 --out OUT",
    "run-unknown-model": "run --preset smoke --model sdxk --out OUT",
    "run-unknown-concept": "run --preset smoke --concepts nonexist --out OUT",
    "run-unknown-preset": "run --preset smok --out OUT",
    "run-png-preset": "run --preset PNG --out OUT",
    "run-folder-preset": "run --preset FOLDER/ --out OUT",
    "run-zero-rank": "run --preset smoke --ranks 0 --out OUT",
    "run-word-rank": "run --preset smoke --ranks four --out OUT",
    "run-bad-precision": "run --preset smoke --precision fp64 --out OUT",
    "run-steps-typo": "run --preset smoke --steps tlroa=5 --out OUT",
    "run-zero-steps": "run --preset smoke --steps tlora=0 --out OUT",
    "run-set-typo": "run --preset smoke --set rnaks=4 --out OUT",
    "run-zero-prompts": "run --preset smoke --set prompts=0 --out OUT",
    "run-bad-bool": "run --preset smoke --set tiny_extractors=maybe --out OUT",
    "run-bad-devices": "run --preset smoke --devices gpu7 --out OUT",
    "run-bad-executor": "run --preset smoke --executor slurm --out OUT",
    "run-unwritable-out": "run --preset smoke --out TEXT/run",
    "run-bad-variant": "run --preset smoke --set variants=3 --out OUT",
    "run-peft-impossible-size": "run --preset smoke --methods tlora,peft:miss-4096 --out OUT",
    "config-unknown-concept": "config --concepts nonexist",
    "config-unknown-model": "config --model foo",
    "config-impossible-size": "config --methods oft-7 --model sdxl",
    "config-r-min-above-rank": "config --ranks 8 --set r_min=16",
    "config-data-dir-with-manifest": "config --concepts MANIFEST --data-dir FOLDER",
    "train-data-dir-with-manifest": "train --method lora --concept rex --manifest MANIFEST --data-dir FOLDER "
                                    "--model tiny --out OUT",
    # train
    "train-unknown-method": "train --method tlroa --concept dog6 --model tiny --out OUT",
    "train-unknown-concept": "train --method tlora --concept nope --model tiny --out OUT",
    "train-zero-rank": "train --method tlora-0 --concept dog6 --model tiny --out OUT",
    "train-rank-on-oft": "train --method oft --rank 8 --concept dog6 --model tiny --out OUT",
    "train-reversed-range": "train --method lora --concept dog6 --model tiny --timestep-range 900,800 --out OUT",
    "train-word-range": "train --method lora --concept dog6 --model tiny --timestep-range abc --out OUT",
    "train-too-many-images": "train --method lora --concept dog6 --model tiny --images 9 --out OUT",
    "train-bad-gamma": "train --method tlora --concept dog6 --model tiny --option gamma=0 --out OUT",
    "train-unknown-option": "train --method tlora --concept dog6 --model tiny --option nosuch=1 --out OUT",
    "train-unknown-peft-option": "train --method peft:loha-4 --concept dog6 --model tiny --option nosuch=1 --out OUT",
    "train-bad-optimizer": "train --method lora --concept dog6 --model tiny --optimizer sgd --out OUT",
    "train-zero-batch": "train --method lora --concept dog6 --model tiny --batch-size 0 --out OUT",
    "train-missing-model": "train --method lora --concept dog6 --model sdxl --model-path NOWHERE --vae-path NOWHERE "
                           "--out OUT",
    # train: every check that can fail runs before OUT is created (a leftover would block the corrected command)
    "train-svd-rank-above-width": "train --method tlora --rank 100 --concept dog6 --model tiny --out OUT",
    "train-lora-rank-above-width": "train --method lora --rank 256 --concept dog6 --model tiny --out OUT",
    "train-huge-rank": "train --method lora --rank 100000 --concept dog6 --model tiny --out OUT",
    "train-negative-lr": "train --method lora --concept dog6 --model tiny --lr -1 --out OUT",
    "train-nan-lr": "train --method lora --concept dog6 --model tiny --lr nan --out OUT",
    "train-inf-lr": "train --method lora --concept dog6 --model tiny --lr inf --out OUT",
    "train-negative-weight-decay": "train --method lora --concept dog6 --model tiny --weight-decay -1 --out OUT",
    "train-negative-grad-norm": "train --method lora --concept dog6 --model tiny --max-grad-norm -1 --out OUT",
    "train-word-alpha": "train --method lora --concept dog6 --model tiny --option alpha=abc --out OUT",
    "train-negative-alpha": "train --method lora --concept dog6 --model tiny --option alpha=-4 --out OUT",
    "train-word-gamma": "train --method tlora --concept dog6 --model tiny --option gamma=abc --out OUT",
    "train-zero-timesteps": "train --method tlora --concept dog6 --model tiny --option num_train_timesteps=0 "
                            "--out OUT",
    "train-option-seed": "train --method lora --concept dog6 --model tiny --option seed=1 --out OUT",
    "train-option-contradicts-rank": "train --method lora --rank 4 --option r=8 --concept dog6 --model tiny "
                                     "--out OUT",
    "train-no-such-target": "train --method lora --concept dog6 --model tiny --option target_modules=nosuch "
                            "--out OUT",
    "train-empty-token": "train --method lora --concept dog6 --model tiny --token EMPTY --out OUT",
    "train-two-word-token": "train --method lora --concept dog6 --model tiny --token TWOWORDS --out OUT",
    "train-braces-token": "train --method lora --concept dog6 --model tiny --token {x} --out OUT",
    "train-corrupt-image": "train --method lora --concept rex --manifest CORRUPT --model tiny --out OUT",
    "train-empty-image": "train --method lora --concept rex --manifest ZEROBYTE --model tiny --out OUT",
    "train-linked-out-image": "train --method lora --concept rex --manifest LINKED --model tiny --out OUT",
    "train-empty-data-env": "TLORA_BENCH_DATA=FOLDER train --method lora --concept dog6 --model tiny --out OUT",
    "run-variant-bad-lr": "run --preset VARLR --dry-run --out OUT",
    "run-variant-too-many-images": "run --preset VARIMAGES --dry-run --out OUT",
    # generate, evaluate, adapters, concepts, prompts, models, report, study
    "generate-missing": "generate NOWHERE",
    "generate-not-an-adapter": "generate PNG",
    # generate: OUT/<method>/<concept>/ only once the model and adapter have loaded (TINYCACHE: the tiny model
    # built once, so its first-build progress lines stay out of the output)
    "generate-wrong-shape": "TLORA_BENCH_CACHE=TINYCACHE generate SHAPE --prompts 1 --device cpu --out OUT",
    "generate-missing-tensor": "TLORA_BENCH_CACHE=TINYCACHE generate MISSING --prompts 1 --device cpu --out OUT",
    "generate-unknown-backend": "generate BACKEND --prompts 1 --device cpu --out OUT",
    "evaluate-missing": "evaluate NOWHERE --tiny-models",
    "evaluate-bad-index": "evaluate BADINDEX --tiny-models --out OUT",
    "evaluate-bad-segmenter": "evaluate BADINDEX --segmenter nope --out OUT",
    "evaluate-bad-dino": "evaluate BADINDEX --dino nope --out OUT",
    "evaluate-unwritable-out": "evaluate GOODINDEX --tiny-models --out TEXT/evaluation",
    "adapter-info-png": "adapter info PNG",
    "adapter-info-missing": "adapter info NOWHERE",
    "adapter-rank-text": "adapter rank TEXT",
    "import-unknown-layout": "adapter import ODDKEYS --out OUT",
    "import-truncated": "adapter import TRUNCATED --out OUT",
    "import-another-model": "adapter import OFFICIAL --model sdxl --out OUT",
    "import-unknown-format": "adapter import OFFICIAL --format oficial-sdxl --out OUT",
    "import-own-format": "adapter import GOOD --out OUT",
    "export-cannot-hold": "adapter export GOOD --format official-flux --out OUT",
    "manifest-png": "concepts validate --manifest PNG",
    "manifest-root-not-a-string": "concepts validate --manifest ROOT5",
    "concept-unknown": "concepts show nonexist",
    "prompts-unknown-concept": "prompts --concept nonexist",
    "models-unknown": "models download --model sdxk",
    "report-missing": "report NOWHERE",
    "study-missing": "study make NOWHERE --pairs a:b",
    "study-missing-key": "study analyze TEXT --key NOWHERE",
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("inputs")
    png = write_image(root / "image.png")
    (root / "folder").mkdir()
    (root / "text.txt").write_text("just text\n")
    bad = root / "badindex" / "lora-4" / "dog6"
    bad.mkdir(parents=True)
    (bad / "images.jsonl").write_bytes(b"\x89PNG\x00\xff binary, not JSON lines")
    good = root / "goodindex" / "lora-4" / "dog6"
    good.mkdir(parents=True)
    write_image(good / "a.png")
    (good / "images.jsonl").write_text('{"file": "a.png", "template": "a photo of a {0}", "image_index": 0}\n')
    from tests.runner_helpers import write_concepts

    manifest = write_concepts(root / "concepts")
    (root / "root5.toml").write_text('[dataset]\nroot = 5\n\n[[concepts]]\nid = "a"\nclass_word = "dog"\n')
    return {"PNG": str(png), "FOLDER": str(root / "folder"), "TEXT": str(root / "text.txt"),
            "NOWHERE": str(root / "nowhere"), "BADINDEX": str(root / "badindex"),
            "GOODINDEX": str(root / "goodindex"), "ROOT5": str(root / "root5.toml"),
            "MANIFEST": str(manifest), "EMPTY": "", "TWOWORDS": "two words",
            **_bad_training_images(root), **_variant_presets(root), **_bad_adapters(root, manifest)}


def _bad_training_images(root: Path) -> dict[str, str]:
    """Manifests whose training image (rex/01.jpg) is corrupt, empty, or a link out of its folder."""
    from tests.runner_helpers import write_concepts

    paths = {}
    for key, damage in (("CORRUPT", lambda p: p.write_bytes(b"not an image")),
                        ("ZEROBYTE", lambda p: p.write_bytes(b"")),
                        ("LINKED", lambda p: (p.unlink(), p.symlink_to(write_image(root / "elsewhere.jpg"))))):
        manifest = write_concepts(root / key.lower())
        damage(manifest.parent / "rex" / "01.jpg")
        paths[key] = str(manifest)
    return paths


def _variant_presets(root: Path) -> dict[str, str]:
    """Presets whose variant is checked by `run --dry-run` as `train` would check it."""
    head = 'name = "v"\nmodel = "tiny"\nconcepts = "dog6"\nmethods = ["late"]\n[variants]\n'
    (root / "varlr.toml").write_text(head + 'late = { method = "lora-4", lr = -1.0 }\n')
    (root / "varimages.toml").write_text(head + 'late = { method = "lora-4", train_images = 99 }\n')
    return {"VARLR": str(root / "varlr.toml"), "VARIMAGES": str(root / "varimages.toml")}


def _bad_adapters(root: Path, manifest: Path) -> dict[str, str]:
    """Adapter files of the tiny model (built on its skeleton, untrained) with a tensor of the wrong shape, a
    tensor missing, and a training spec naming an unknown backend; TINYCACHE, a cache holding the tiny model."""
    import json

    import torch
    from safetensors.torch import load_file, safe_open, save_file

    from tests.train_helpers import load_tiny
    from tlora_bench.adapters import attach_adapters, detach_adapters
    from tlora_bench.adapters.io import save_adapter
    from tlora_bench.models import denoiser_skeleton
    from tlora_bench.train import TrainSpec, resolve_recipe

    job = TrainSpec(method="lora-4", concept="rex", model="tiny", manifest=str(manifest), steps=1)
    recipe, model, good = resolve_recipe(job), denoiser_skeleton("tiny"), root / "good.safetensors"
    attach_adapters(model, recipe.adapter_config)
    save_adapter(model, good, {"label": recipe.label, "train_spec": job.to_dict()})
    detach_adapters(model)
    tensors = load_file(str(good))
    with safe_open(str(good), framework="pt") as f:
        metadata = f.metadata()
    first = sorted(tensors)[0]
    other_model = {**json.loads(metadata["train_spec"]), "model": "nosuch"}
    for name, changed, meta in (("shape", {**tensors, first: torch.zeros(3, 3)}, metadata),
                                ("missing", {k: v for k, v in tensors.items() if k != first}, metadata),
                                ("backend", tensors, {**metadata, "train_spec": json.dumps(other_model)})):
        save_file(changed, str(root / f"{name}.safetensors"), metadata=meta)
    load_tiny("tiny", root / "cache")
    return {"TINYCACHE": str(root / "cache"), "GOOD": str(good), **_foreign_adapters(root, good),
            **{name.upper(): str(root / f"{name}.safetensors") for name in ("shape", "missing", "backend")}}


def _foreign_adapters(root: Path, good: Path) -> dict[str, str]:
    """Other tools' files: one in no known layout, an official-format export of the tiny model's adapter, and
    that export truncated."""
    import torch
    from safetensors.torch import save_file

    from tlora_bench.adapters.formats import export_adapter

    save_file({"some.weight": torch.zeros(2)}, str(root / "oddkeys.safetensors"))
    official = export_adapter(good, "official-sdxl", root / "official")[0]
    (root / "truncated").mkdir()
    (root / "truncated" / official.name).write_bytes(official.read_bytes()[:-64])
    return {"ODDKEYS": str(root / "oddkeys.safetensors"), "OFFICIAL": str(official),
            "TRUNCATED": str(root / "truncated" / official.name)}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_leaves_nothing(case: str, inputs: dict[str, str], tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    words = CASES[case].split()
    settings = dict(w.split("=", 1) for w in words if "=" in w and w.split("=", 1)[0].isupper())  # VAR=X first
    args = [{**inputs, "OUT": str(out)}.get(arg, arg) for arg in words if arg.split("=", 1)[0] not in settings]
    args = [arg.replace("FOLDER/", inputs["FOLDER"] + "/").replace("TEXT/", inputs["TEXT"] + "/") for arg in args]
    env = {**os.environ, "TLORA_BENCH_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           **{key: inputs.get(value, value) for key, value in settings.items()}}
    done = subprocess.run([sys.executable, "-m", "tlora_bench.cli", *args], cwd=work, env=env, capture_output=True,
                          text=True, timeout=300)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and len(output.splitlines()) == 1, output
    assert not out.exists() and list(work.iterdir()) == [], f"left behind: {list(work.rglob('*'))}"
