"""`tlora-bench run`: planning, the run folder, resume, failures, config changes, dry run and executors."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

from tests.runner_helpers import assert_same_results, preset_file, reduced_config, results
from tlora_bench.cli import main
from tlora_bench.config import load_config
from tlora_bench.errors import EXIT_INCOMPLETE, TloraBenchError
from tlora_bench.planner import make_plan
from tlora_bench.runner import run
from tlora_bench.runner.jobs import DONE_FILE, FAILED_FILE


def _jobs(config):
    return list(make_plan(config).jobs)


def _variants(config):
    return list(make_plan(config).variants)


def quiet(message: str) -> None:
    pass


def test_presets_plan_the_papers_experiments():
    assert len(_jobs(load_config("paper-table2"))) == 175
    assert len(_jobs(load_config("paper-table1"))) == 3 * 5 * 25
    labels = [v.label for v in _variants(load_config("smoke"))]
    assert labels == ["tlora-4", "vanilla-tlora-4", "ortho-lora-4", "lora-4", "oft-4", "gsoft-4", "svdiff"]
    fig2 = _jobs(load_config("paper-fig2"))
    assert {job.train.timestep_range for job in fig2} == {(800, 1000), (500, 800), (0, 500)}
    assert {job.train.method for job in fig2} == {"lora-64"}
    fig6 = {job.label: job.train.adapter.get("r_min") for job in _jobs(load_config("paper-fig6"))}
    assert fig6 == {"ortho-lora-64": None, "tlora-64-rmin16": 16, "tlora-64-rmin32": 32}
    table4 = {job.label: job.train.train_images for job in _jobs(load_config("paper-table4"))}
    assert table4["oft-32-img3"] == 3 and table4["tlora-64-img1"] == 1
    jobs = _jobs(load_config("smoke", {"seeds": "0,1"}))
    assert {job.image_label for job in jobs if job.label == "svdiff"} == {"svdiff.seed0", "svdiff.seed1"}
    assert len({job.key for job in jobs}) == len(jobs)


@pytest.mark.parametrize("overrides, message", [
    ({"methods": "lora", "variants": {"x": {"method": "lora"}}}, "variant 'x' is declared but not listed"),
    ({"methods": "x", "variants": {"x": {"rank": 4}}}, r"variants.x' needs method"),
    ({"methods": "x", "variants": {"x": {"method": "lora-4", "gamma": 0}}}, "variant 'x-4'|variant 'x'"),
    ({"methods": "x", "variants": {"x": {"method": "oft-4", "rank": 4}}}, "'rank' needs a rank-sized method"),
    ({"steps": "tlroa=5"}, "'steps' names 'tlroa'.*did you mean 'tlora'"),
    ({"model": "sdxk"}, "config key 'model': unknown model backend 'sdxk'; did you mean 'sdxl'"),
    ({"methods": "lora-4,lora", "ranks": "4"}, "gives the label 'lora-4' twice"),
    ({"reference": "tlora-8"}, "'reference' names 'tlora-8', which is no method of this run; did you mean 'tlora-4'"),
])
def test_bad_variants_and_names_fail_when_the_run_is_planned(overrides, message):
    with pytest.raises(TloraBenchError, match=message):
        make_plan(load_config("smoke", overrides))


def test_dry_run_of_paper_table2_loads_no_model(monkeypatch):
    import tlora_bench.models as models

    monkeypatch.setattr(models, "load_backend", lambda *a, **k: pytest.fail("dry run loaded a model"))
    result = CliRunner().invoke(main, ["run", "--preset", "paper-table2", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "175 jobs" in result.output and "31,510 images" in result.output
    assert "device hours" in result.output and "source:" in result.output
    assert "152,500 training steps" in result.output  # 25 x (800 x 5 + 500 + 1600)


def test_a_run_writes_its_folder_and_a_rerun_redoes_nothing(tmp_path, monkeypatch):
    config = reduced_config(tmp_path)
    first = run(config, tmp_path / "run", progress=False, echo=quiet)
    assert first.complete and len(first.outcomes) == 6
    run_dir = tmp_path / "run"
    for name in ("config.json", "provenance.json", "leaderboard.csv", "summary.json", "evaluation/scores.csv"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "config.json").read_text()) == config.to_dict()
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["sessions"][0]["git_commit"] and "rank_schedule" in provenance["protocol"]
    evaluated = json.loads((run_dir / "evaluation" / "evaluation.json").read_text())["provenance"]
    for key in ("git_commit", "git_dirty", "tlora_bench_version", "torch_version", "diffusers_version",
                "transformers_version", "peft_version", "open_clip_version", "timm_version", "device"):
        assert key in evaluated, key
    assert evaluated["git_commit"] == provenance["sessions"][0]["git_commit"]
    assert len(list(run_dir.glob("jobs/*/*/seed-0/train/adapter.safetensors"))) == 6
    per_method = pd.read_csv(run_dir / "evaluation" / "per_method.csv")
    board = pd.read_csv(run_dir / "leaderboard.csv").set_index("method_label")
    assert list(board.index) == ["tlora-4", "lora-4", "oft-4"] and board["complete"].all()
    for _, row in per_method.iterrows():
        assert board.loc[row["method_label"], f"{row['metric']}_mean"] == pytest.approx(row["mean"], nan_ok=True)
    assert board.loc["tlora-4", "rank"] == 4 and pd.isna(board.loc["oft-4", "rank"])
    markers = {p: p.stat().st_mtime_ns for p in run_dir.glob(f"jobs/**/{DONE_FILE}")}
    again = run(config, run_dir, progress=False, echo=quiet)
    assert again.complete and all(o.skipped for o in again.outcomes)
    assert {p: p.stat().st_mtime_ns for p in markers} == markers
    assert len(json.loads((run_dir / "provenance.json").read_text())["sessions"]) == 2
    assert board["random_weights"].all() and "pareto_is_ts" in board  # tiny models: marked meaningless
    assert set(pd.read_csv(run_dir / "report" / "paired.csv")["reference"]) == {"tlora-4"}  # the first T-LoRA
    scored = (run_dir / "evaluation" / "scores.csv").stat().st_mtime_ns
    run_module = importlib.import_module("tlora_bench.runner.run")  # the package exports run(), the function

    asked = []  # the report alone needs no scoring model: a changed reference must not ask for one
    monkeypatch.setattr(run_module, "check_weights", lambda config, train, score: asked.append((train, score)))
    other = run(replace(config, reference="lora-4"), run_dir, progress=False, echo=quiet)  # a report-only key
    assert asked == [(False, False)]
    assert other.complete and (run_dir / "evaluation" / "scores.csv").stat().st_mtime_ns == scored  # not rescored
    assert set(pd.read_csv(run_dir / "report" / "paired.csv")["reference"]) == {"lora-4"}
    assert json.loads((run_dir / "config.json").read_text())["reference"] == "lora-4"


def test_another_config_in_the_same_folder_is_refused_or_moved_aside(tmp_path):
    config = reduced_config(tmp_path)
    run(config, tmp_path / "run", progress=False, echo=quiet)
    other = reduced_config(tmp_path, ranks="8")
    with pytest.raises(TloraBenchError, match=r"holds a run with ranks=\[4\], not \[8\].*--force-new"):
        run(other, tmp_path / "run", progress=False, echo=quiet)
    result = run(other, tmp_path / "run", force_new=True, progress=False, echo=quiet)
    assert result.complete
    aside = list(tmp_path.glob("run.old-*"))
    assert len(aside) == 1 and (aside[0] / "leaderboard.csv").is_file()


def test_a_failing_job_is_recorded_the_others_finish_and_retry_failed_completes(tmp_path):
    path = preset_file(tmp_path)
    image = tmp_path / "data" / "mug" / "00.jpg"  # mug's training image
    good = image.read_bytes()
    image.write_bytes(b"not an image")
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(main, ["run", "--preset", str(path), "--out", str(out)])
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    assert "failed: tlora-4/mug/seed-0: cannot read image" in result.output and "Traceback" not in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["done"], summary["failed"], summary["complete"]) == (3, 3, False)
    board = pd.read_csv(out / "leaderboard.csv").set_index("method_label")
    assert not board["complete"].any() and (board["concepts_scored"] == 1).all()
    assert (out / "jobs" / "lora-4" / "mug" / "seed-0" / FAILED_FILE).is_file()
    assert runner.invoke(main, ["run", "--preset", str(path), "--out", str(out)]).exit_code == EXIT_INCOMPLETE
    image.write_bytes(good)
    result = runner.invoke(main, ["run", "--preset", str(path), "--out", str(out), "--retry-failed"])
    assert result.exit_code == 0, result.output
    assert "| method | concepts | images | CLIP-IS (masked)" in result.output  # the leaderboard, printed
    assert json.loads((out / "summary.json").read_text())["complete"]
    assert pd.read_csv(out / "leaderboard.csv")["complete"].all()


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(tmp_path):
    path = preset_file(tmp_path, steps="all=8")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tlora_bench.cli", "run", "--preset", str(path), "--out"]
    clean = subprocess.run([*command, str(tmp_path / "clean")], env=env, capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
    cut = tmp_path / "cut"
    process = subprocess.Popen([*command, str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(cut.glob(f"jobs/*/*/*/{DONE_FILE}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # into the next job's training or sampling
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p: (p.read_text(), p.stat().st_mtime_ns) for p in cut.glob(f"jobs/*/*/*/{DONE_FILE}")}
    assert 0 < len(finished) < 6, "the kill must land mid-run"
    again = subprocess.run([*command, str(cut)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in finished} == finished  # no finished job redone
    assert_same_results(results(tmp_path / "clean"), results(cut))


@pytest.mark.slow
def test_process_pool_and_ray_executors_give_the_local_results(tmp_path, monkeypatch):
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # Ray then runs each one-CPU task on one thread
    config = reduced_config(tmp_path, methods="tlora,lora")
    run(config, tmp_path / "local", progress=False, echo=quiet)
    pool = run(config, tmp_path / "pool", devices=("cpu", "cpu"), progress=False, echo=quiet)
    assert pool.complete
    assert_same_results(results(tmp_path / "local"), results(tmp_path / "pool"))
    ray = pytest.importorskip("ray")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray task with one CPU runs torch on one thread: compare like with like
    try:
        run(config, tmp_path / "local-1-thread", progress=False, echo=quiet)
    finally:
        torch.set_num_threads(threads)
    # The tasks load the tiny model from this test's cache, whose path each adapter's provenance names (under
    # xdist, Ray's workers once saw another cache: the adapters then differed by the paths' lengths).
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"TLORA_BENCH_CACHE": os.environ["TLORA_BENCH_CACHE"]}})
    try:
        result = run(config, tmp_path / "ray", executor="ray", progress=False, echo=quiet)
    finally:
        ray.shutdown()
    assert result.complete and len(result.outcomes) == 4
    assert_same_results(results(tmp_path / "local-1-thread"), results(tmp_path / "ray"))


def test_images_of_a_corrupt_png_are_redone_on_rerun(tmp_path):
    config = reduced_config(tmp_path, methods="lora")
    run(config, tmp_path / "run", progress=False, echo=quiet)
    png = sorted((tmp_path / "run" / "images" / "lora-4" / "rex").glob("*.png"))[0]
    before = Image.open(png).tobytes()
    png.write_bytes(png.read_bytes()[:50])
    shutil.rmtree(tmp_path / "run" / "jobs" / "lora-4" / "rex")  # forget the job: it trains and samples again
    assert run(config, tmp_path / "run", progress=False, echo=quiet).complete
    assert Image.open(png).tobytes() == before


def test_files_get_the_users_mode_and_temporaries_of_an_interrupted_write_are_removed(tmp_path):
    config = reduced_config(tmp_path, methods="lora")
    run_dir = tmp_path / "run"
    run(config, run_dir, progress=False, echo=quiet)
    stale = run_dir / "jobs" / "lora-4" / "rex" / "seed-0" / "train" / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    (run_dir / ".summary.json.x1.tmp").write_text("{")
    assert run(config, run_dir, progress=False, echo=quiet).complete
    assert not list(run_dir.rglob(".*.tmp"))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("config.json", "summary.json", "leaderboard.csv"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


def test_an_unwritable_run_folder_and_an_impossible_size_fail_before_any_work(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    config = reduced_config(tmp_path)
    with pytest.raises(TloraBenchError, match=r"cannot write to .*choose another --out"):
        run(config, blocked / "run", progress=False, echo=quiet)
    with pytest.raises(TloraBenchError, match="oft-7 on model 'tiny': oft-7 is impossible"):
        make_plan(reduced_config(tmp_path, methods="oft-7"))


def test_a_dry_run_under_a_backend_alias_finds_its_throughput_figure():
    result = CliRunner().invoke(main, ["run", "--preset", "smoke", "--dry-run"])  # model "tiny": tiny-sdxl's figure
    assert result.exit_code == 0, result.output
    assert "device hours" in result.output and "no throughput figure" not in result.output
