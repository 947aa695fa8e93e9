"""What `run` knows before any job: whether the model and the evaluation models can be had (one line, exit 1,
no folder), what a re-run of a finished run redoes (nothing, unless what the scores depend on changed), and
the progress it writes to a log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.runner_helpers import preset_file, reduced_config
from tlora_bench.cli import main
from tlora_bench.errors import TloraBenchError
from tlora_bench.runner import run


def quiet(message: str) -> None:
    pass


def _one_line(result, *fragments: str) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.mark.parametrize("args, fragments", [
    ([], ["model 'sdxl'", "stabilityai/stable-diffusion-xl-base-1.0", "its VAE", "HF_HUB_OFFLINE",
          "tlora-bench models download --model sdxl", "--set model_path=DIR", "--model tiny", "--preset smoke"]),
    (["--model", "flux"], ["model 'flux'", "black-forest-labs/FLUX.1-dev", "models download --model flux"]),
    (["--set", "model_path=/no/such/folder"], ["model 'sdxl'", "folder '/no/such/folder' does not exist"]),
])
def test_a_model_that_cannot_be_had_is_one_line_before_any_job(tmp_path: Path, args: list[str], fragments):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--methods", "tlora,lora,oft", "--out", str(out), *args])
    _one_line(result, *fragments)
    assert not out.exists()  # no job folder, no failed.json, nothing to list as "failed (earlier)"


def test_a_local_model_folder_without_a_pipeline_is_named(tmp_path: Path):
    folder = tmp_path / "my model"
    folder.mkdir()
    result = CliRunner().invoke(main, ["run", "--methods", "tlora", "--concepts", "dog6", "--out",
                                       str(tmp_path / "run"), "--set", f"model_path={folder}"])
    _one_line(result, f"folder '{folder}' has no model_index.json")


@pytest.mark.parametrize("settings, name", [({}, "clip-vit-b-32"), ({"segmenter": "grounded-sam"}, "clip-vit-b-32")])
def test_evaluation_models_that_cannot_be_had_are_one_line_before_any_job(tmp_path: Path, settings, name):
    path = preset_file(tmp_path, tiny_extractors=False, **settings)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--preset", str(path), "--out", str(out)])
    _one_line(result, f"evaluation model '{name}'", "models download --evaluation", "tiny_extractors=true")
    assert not out.exists()


def test_the_weights_check_names_the_segmenter_and_dino(monkeypatch):
    from tlora_bench.metrics import weights

    monkeypatch.setattr("tlora_bench.hub.why_unavailable",
                        lambda repo, revision=None: None if "clip" in repo else "the hub is switched off")
    with pytest.raises(TloraBenchError, match="evaluation model 'dino-vits16'"):
        weights.check_evaluation_weights(["clip-vit-b-32", "dino-vits16"])
    with pytest.raises(TloraBenchError, match=r"evaluation model 'grounded-sam'.*grounding-dino-tiny"):
        weights.check_evaluation_weights(["clip-vit-b-32", "grounded-sam"])


def test_a_cached_or_reachable_model_passes(monkeypatch):
    from tlora_bench.models.download import check_model_available

    monkeypatch.setattr("tlora_bench.hub.why_unavailable", lambda repo, revision=None: None)
    check_model_available("sdxl")
    check_model_available("flux")


def test_a_finished_run_is_not_scored_again_unless_its_inputs_change(tmp_path: Path, monkeypatch):
    import tlora_bench.metrics.evaluate as evaluate

    config = reduced_config(tmp_path, methods="lora")
    run_dir = tmp_path / "run"
    first = run(config, run_dir, progress=False, echo=quiet)
    assert first.complete and first.report is not None
    report_time = first.report.stat().st_mtime_ns
    calls = []
    real = evaluate.evaluate_folder
    monkeypatch.setattr(evaluate, "evaluate_folder", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = run(config, run_dir, progress=False, echo=quiet)
    assert again.complete and calls == [] and again.report.stat().st_mtime_ns == report_time
    assert list(again.leaderboard["method_label"]) == ["lora-4"]
    image = next(run_dir.glob("images/**/*.png"))
    image.write_bytes(image.read_bytes())  # touched: what the scores were made from may have changed
    run(config, run_dir, progress=False, echo=quiet)
    assert calls == [1]
    rescored = run(reduced_config(tmp_path, methods="lora", bootstrap="60"), run_dir, progress=False, echo=quiet)
    assert calls == [1, 1] and rescored.complete  # a scoring key changed
    (run_dir / "report" / "report.html").unlink()
    run(reduced_config(tmp_path, methods="lora", bootstrap="60"), run_dir, progress=False, echo=quiet)
    assert (run_dir / "report" / "report.html").is_file()


def test_a_run_logs_one_line_per_finished_job_when_stdout_is_not_a_terminal(tmp_path: Path):
    path = preset_file(tmp_path, methods="lora,oft-4")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["run", "--preset", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 4, result.stdout
    pattern = r"\[(\d)/4\] done \S+/seed-0 in \d+ s; (\d) done, 0 failed, (\d) to go, (about .+ left|all ran)"
    for number, line in enumerate(lines, 1):
        match = re.fullmatch(pattern, line)
        assert match and int(match[1]) == number == int(match[2]) and int(match[3]) == 4 - number, line
    again = CliRunner().invoke(main, ["run", "--preset", str(path), "--out", str(out)])
    assert not [line for line in again.stdout.splitlines() if line.startswith("[")]  # nothing ran
    assert "4 jobs in" in again.stdout and "all finished before" in again.stdout


def test_generate_hints_the_evaluate_options_that_fit_its_adapter(tmp_path: Path):
    config = reduced_config(tmp_path, methods="lora")
    run_dir = tmp_path / "run"
    run(config, run_dir, progress=False, echo=quiet)
    adapter = next(run_dir.glob("jobs/**/adapter.safetensors"))
    out = tmp_path / "my images"
    result = CliRunner().invoke(main, ["generate", str(adapter), "--out", str(out), "--prompts", "1",
                                       "--base-images", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    hint = result.stdout.strip().splitlines()[-1]
    assert hint.startswith("score them: tlora-bench evaluate ") and "--tiny-models" in hint
    assert f"'{out}'" in hint and "--manifest" in hint  # a path with a space, quoted; the user manifest
    import shlex

    words = shlex.split(hint.removeprefix("score them: "))
    scored = CliRunner().invoke(main, [*words[1:], "--segmenter", "none", "--bootstrap", "10"])
    assert scored.exit_code == 0, scored.output
    assert json.loads((out / "evaluation" / "evaluation.json").read_text())
