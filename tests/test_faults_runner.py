"""Fault classes of the runner, each as a class: two runs on one folder, a full disk, files changed after their
job finished, SIGTERM and Ctrl-C, read-only folders, unusual paths, failed scoring and reports of unfinished
folders. Each fault ends in one line and a non-zero exit, never a traceback, and loses no finished work."""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from tests.cli_helpers import assert_one_line_error
from tests.runner_helpers import REDUCED, assert_same_results, results
from tests.train_helpers import write_concepts
from tlora_bench.cli import main
from tlora_bench.errors import EXIT_INCOMPLETE, TloraBenchError

ROOT = Path(__file__).resolve().parent.parent
LORA = {**REDUCED, "methods": "lora", "name": "faults"}  # two jobs: lora-4 on rex and on mug
ADAPTER = "jobs/lora-4/{}/seed-0/train/adapter.safetensors"


def write_preset(folder: Path, manifest: Path, **overrides) -> Path:
    values = {**LORA, "concepts": str(manifest), **overrides}
    steps = values.pop("steps").split("=")[1]
    path = folder / "faults.toml"
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()) + f"[steps]\nall = {steps}\n",
                    encoding="utf-8")
    return path


def cli(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time: what "nothing was lost or touched" compares."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*.tmp")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished two-job run (its own tiny-model cache), copied by each test that changes it."""
    base = tmp_path_factory.mktemp("finished")
    manifest = write_concepts(base / "data")
    preset = write_preset(base, manifest)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TLORA_BENCH_CACHE", str(base / "cache"))
        result = cli("run", "--preset", preset, "--out", base / "run")
    assert result.exit_code == 0, result.output
    return {"run": base / "run", "preset": preset, "manifest": manifest, "cache": base / "cache"}


@pytest.fixture
def run_copy(finished, tmp_path, monkeypatch):
    """A copy of the finished run (modification times kept), with the tiny model cache of the module."""
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(finished["cache"]))
    copy = tmp_path / "run"
    shutil.copytree(finished["run"], copy, copy_function=shutil.copy2)
    return copy


def rerun(finished, run_dir: Path, *more: str):
    return cli("run", "--preset", finished["preset"], "--out", run_dir, *more)


# ---- simulated faults -----------------------------------------------------------------------------------


class _FullFile:
    """A file object on a full disk: the first write stores half of its data, then fails with ENOSPC."""

    def __init__(self, file) -> None:
        self._file = file

    def write(self, data):
        self._file.write(data[:len(data) // 2])
        self._file.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._file.close()


def disk_full(monkeypatch, name: str, skip: int = 0) -> dict:
    """The disk fills while a file called `name` is written (atomic writes through their temporary, appends
    directly): the write after the first `skip` ones stores half its bytes, then fails with ENOSPC."""
    state = {"seen": 0, "failed": []}
    real_fdopen, real_open = os.fdopen, pathlib.Path.open

    def hit(path: str) -> bool:
        if not re.fullmatch(rf"\.?{re.escape(name)}(\.\w+\.tmp)?", os.path.basename(path)):
            return False
        state["seen"] += 1
        if state["seen"] <= skip or state["failed"]:
            return False
        state["failed"].append(path)
        return True

    def fdopen(fd, mode="r", *args, **kwargs):
        file = real_fdopen(fd, mode, *args, **kwargs)
        if "w" in mode and hit(os.readlink(f"/proc/self/fd/{fd}")):
            return _FullFile(file)
        return file

    def path_open(self, mode="r", *args, **kwargs):
        file = real_open(self, mode, *args, **kwargs)
        return _FullFile(file) if "a" in mode and hit(str(self)) else file

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(pathlib.Path, "open", path_open)
    return state


def read_only(monkeypatch, root: Path) -> None:
    """As `chmod -R a-w root` for a user who is not root (the tests run as root, whom modes do not stop): every
    call that would create, change or remove something under root fails with EACCES, and os.access says so."""
    root_text = str(root)

    def under(path) -> bool:
        if isinstance(path, int):
            return False
        text = os.path.abspath(os.fsdecode(path))
        return text == root_text or text.startswith(root_text + os.sep)

    def denied(path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

    def guard(function, *checked):
        def wrapper(*args, **kwargs):
            for position in checked:
                if len(args) > position and under(args[position]):
                    denied(args[position])
            return function(*args, **kwargs)
        return wrapper

    real_os_open, real_io_open, real_access = os.open, io.open, os.access
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def os_open(path, flags, *args, **kwargs):
        if flags & writing and under(path):
            denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and under(file):
            denied(file)
        return real_io_open(file, mode, *args, **kwargs)

    def access(path, mode, *args, **kwargs):
        return False if mode & os.W_OK and under(path) else real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr("builtins.open", io_open)
    monkeypatch.setattr(os, "access", access)
    for name, checked in (("mkdir", (0,)), ("rename", (0, 1)), ("replace", (0, 1)), ("unlink", (0,)),
                          ("remove", (0,)), ("rmdir", (0,)), ("chmod", (0,)), ("utime", (0,))):
        monkeypatch.setattr(os, name, guard(getattr(os, name), *checked))


def error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ---- 1. two runs on one folder --------------------------------------------------------------------------

HOLD = ("import sys, time\nfrom pathlib import Path\nfrom tlora_bench.runner.lock import run_folder_lock\n"
        "with run_folder_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(300)\n")


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder, as a `tlora-bench run` does for the whole run."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                               cwd=ROOT)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_run_on_a_folder_being_run_is_refused_naming_it_and_the_pid(finished, run_copy, tmp_path):
    holder = hold_lock(run_copy)
    try:
        before = snapshot(run_copy)
        line = assert_one_line_error(rerun(finished, run_copy), str(run_copy), f"pid {holder.pid}")
        assert "another `tlora-bench run`" in line
        assert snapshot(run_copy) == before  # refused before anything was written
        report = cli("report", run_copy)  # reading a folder being run is allowed
        assert report.exit_code == 0, report.output
        scored = cli("evaluate", run_copy / "images", "--manifest", finished["manifest"], "--tiny-models",
                     "--segmenter", "none", "--bootstrap", "20", "--out", tmp_path / "scores")
        assert scored.exit_code == 0, scored.output
    finally:
        holder.kill()  # SIGKILL: its lock file stays behind, stale
        holder.wait()
    again = rerun(finished, run_copy)  # a dead holder's lock never blocks
    assert again.exit_code == 0, again.output


# ---- 2. the disk fills ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_is_one_line_leaves_no_partial_file_and_a_rerun_recomputes_it(finished, tmp_path, monkeypatch):
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(finished["cache"]))
    out = tmp_path / "run"
    rex = out / "jobs/lora-4/rex/seed-0/train"
    # One fault per writer, in the order a run writes: each stops the run, and the next run goes on from there.
    for name, skip in (("checkpoint.pt", 1), ("train_log.jsonl", 0), ("adapter.safetensors", 0),
                       ("p01_i00.png", 0), ("images.jsonl", 0), ("done.json", 0), ("summary.json", 0)):
        with monkeypatch.context() as patch:
            state = disk_full(patch, name, skip)
            result = rerun(finished, out)
        assert state["failed"], f"{name} was never written"
        target = Path(state["failed"][0])
        final = target.with_name(name) if target.name != name else target
        line = assert_one_line_error(result, f"no space left on device while writing '{final}'",
                                     "free space and re-run: finished work is kept")
        assert not temporaries(out), (name, temporaries(out))
        if name == "checkpoint.pt":  # the checkpoint of step 1 is kept whole, not half of step 2's
            assert torch.load(final, weights_only=True)["step"] == 1, line
        elif name != "train_log.jsonl":  # the log keeps its whole lines; a resume drops a cut one
            assert not final.exists(), name
    assert (rex / "adapter.safetensors").is_file()
    last = rerun(finished, out)
    assert last.exit_code == 0, last.output
    assert_same_results(results(finished["run"]), results(out))


def test_the_atomic_write_makes_a_full_disk_one_line_and_keeps_no_temporary(tmp_path, monkeypatch):
    from tlora_bench.fileio import atomic_write_bytes

    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullFile(io.FileIO(fd, "w")))
    with pytest.raises(TloraBenchError, match=r"no space left on device while writing '.*x\.bin'; free space"):
        atomic_write_bytes(tmp_path / "x.bin", b"0123456789")
    assert not list(tmp_path.iterdir())


# ---- 3. an adapter changed after its job finished --------------------------------------------------------


def _alter(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x5A  # a byte of the last tensor: still a readable safetensors file
    path.write_bytes(bytes(data))


def test_an_adapter_truncated_or_altered_after_its_job_finished_is_trained_again(finished, run_copy):
    rex, mug = run_copy / ADAPTER.format("rex"), run_copy / ADAPTER.format("mug")
    rex.write_bytes(rex.read_bytes()[:1000])
    _alter(mug)
    result = rerun(finished, run_copy)
    assert result.exit_code == 0, result.output
    for job, path in (("lora-4/rex/seed-0", rex), ("lora-4/mug/seed-0", mug)):
        assert f"{job}: its adapter '{path}' changed after the job finished" in result.stderr, result.stderr
        original = load_file(str(finished["run"] / ADAPTER.format(job.split("/")[1])))
        again = load_file(str(path))
        assert original.keys() == again.keys() and all(torch.equal(original[k], again[k]) for k in original)
    assert_same_results(results(finished["run"]), results(run_copy))


def test_generate_refuses_a_truncated_or_altered_adapter(run_copy, tmp_path):
    adapter = tmp_path / "train" / "adapter.safetensors"
    shutil.copytree(run_copy / "jobs/lora-4/rex/seed-0/train", adapter.parent)
    args = ("generate", adapter, "--prompts", "1", "--base-images", "1", "--device", "cpu", "--out",
            tmp_path / "images")
    good = adapter.read_bytes()
    adapter.write_bytes(good[:len(good) // 2])
    assert_one_line_error(cli(*args), str(adapter), "not a readable safetensors file", "not fully covered")
    adapter.write_bytes(good)
    _alter(adapter)
    assert_one_line_error(cli(*args), str(adapter), "sha256", "truncated or altered", "train it again")
    assert not (tmp_path / "images").exists()
    adapter.write_bytes(good)
    assert cli(*args).exit_code == 0


# ---- 4. SIGTERM and Ctrl-C ------------------------------------------------------------------------------


def _wait_for(condition, process: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the run ended before {what}: {process.communicate()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_at_a_safe_point_and_the_resume_equals_an_uninterrupted_run(tmp_path):
    manifest = write_concepts(tmp_path / "data")
    preset = write_preset(tmp_path, manifest, steps="all=16", checkpoint_every=4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tlora_bench.cli", "run", "--preset", str(preset), "--out"]
    clean = subprocess.run([*command, str(tmp_path / "clean")], env=env, capture_output=True, text=True, cwd=ROOT)
    assert clean.returncode == 0, clean.stderr
    cut = tmp_path / "cut"
    assert cli("run", "--preset", preset, "--out", cut, "--dry-run").exit_code == 0  # imports done: fast below
    process = subprocess.Popen([*command, str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    _wait_for(lambda: any(cut.glob("jobs/*/*/*/train/train_spec.json")), process, "the training started")
    # Two real runs at once: the second is refused, naming the first.
    assert_one_line_error(cli("run", "--preset", preset, "--out", cut), str(cut), f"pid {process.pid}")
    _wait_for(lambda: any(cut.glob("jobs/*/*/*/train/checkpoint.pt")), process, "a checkpoint")
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert stderr.strip().splitlines() == ["interrupted: re-run the same command to resume"], stderr
    train = next(cut.glob("jobs/*/*/*/train/checkpoint.pt")).parent
    steps = [json.loads(line)["step"] for line in (train / "train_log.jsonl").read_text().splitlines()]
    saved = torch.load(train / "checkpoint.pt", weights_only=True)["step"]
    assert saved == steps[-1] < 16  # stopped after a whole step, whose checkpoint it wrote
    assert not temporaries(cut)

    process = subprocess.Popen([*command, str(cut)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    _wait_for(lambda: any(cut.glob("images/*/*/*.png")), process, "an image")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted: re-run the same command to resume", stderr
    assert not temporaries(cut)
    again = subprocess.run([*command, str(cut)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert_same_results(results(tmp_path / "clean"), results(cut))


def test_an_interrupt_restores_the_signal_handlers_and_exits_130(monkeypatch):
    from tlora_bench.interrupts import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), stop_on_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is before
    import tlora_bench.cli as cli_module

    monkeypatch.setattr(cli_module, "build_config", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    result = cli("run", "--preset", "smoke")
    assert result.exit_code == 130 and result.stderr.strip() == "interrupted: re-run the same command to resume"


# ---- 5. read-only folders and caches --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "generate", "evaluate", "report"])
def test_a_read_only_run_folder_is_one_line_and_loses_nothing(finished, run_copy, monkeypatch, command):
    shutil.rmtree(run_copy / "report")  # report: nothing to re-make it from but the read-only folder
    args = {"run": ("run", "--preset", finished["preset"], "--out", run_copy),
            "generate": ("generate", run_copy / "jobs/lora-4/rex/seed-0/train", "--out", run_copy / "images",
                         "--prompts", "2", "--images-per-prompt", "1", "--base-images", "2", "--device", "cpu"),
            "evaluate": ("evaluate", run_copy / "images", "--out", run_copy / "evaluation", "--manifest",
                         finished["manifest"], "--tiny-models", "--segmenter", "none"),
            "report": ("report", run_copy)}[command]
    before = snapshot(run_copy)
    read_only(monkeypatch, run_copy)
    line = assert_one_line_error(cli(*args), str(run_copy))
    assert "cannot write" in line, line
    monkeypatch.undo()
    assert snapshot(run_copy) == before
    assert not (run_copy / "report").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders: the simulated variant runs")
def test_a_chmod_read_only_run_folder_is_one_line(finished, run_copy):
    before = snapshot(run_copy)
    for path in [run_copy, *run_copy.rglob("*")]:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        for args in (("run", "--preset", finished["preset"], "--out", run_copy), ("report", run_copy)):
            assert "cannot write" in assert_one_line_error(cli(*args), str(run_copy))
    finally:
        for path in [run_copy, *run_copy.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert snapshot(run_copy) == before


def test_a_read_only_model_cache_is_one_line_before_any_work(finished, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(cache))
    read_only(monkeypatch, cache)
    line = assert_one_line_error(cli("run", "--preset", finished["preset"], "--out", tmp_path / "run"), str(cache))
    assert "TLORA_BENCH_CACHE" in line
    assert not (tmp_path / "run").exists()


# ---- 6. spaces and non-ASCII characters -----------------------------------------------------------------


def test_spaces_and_non_ascii_in_every_path_run_evaluate_report_and_study(tmp_path, monkeypatch):
    data = tmp_path / "dätä set"
    write_concepts(data)
    (data / "rex").rename(data / "chat noir é")
    manifest = data / "my concépts.toml"
    manifest.write_text('[dataset]\nname = "chats"\n\n[[concepts]]\nid = "chat-noir"\nfolder = "chat noir é"\n'
                        'class_word = "chat noiré"\nlive = true\n', encoding="utf-8")
    (data / "tiny.toml").unlink()
    monkeypatch.setenv("TLORA_BENCH_CACHE", str(tmp_path / "cäche ü"))
    out = tmp_path / "my rüns" / "ü ñ"
    preset = write_preset(tmp_path, manifest, methods="lora,tlora")
    result = cli("run", "--preset", preset, "--out", out)
    assert result.exit_code == 0, result.output
    assert (out / "images" / "lora-4" / "chat-noir" / "images.jsonl").is_file()
    scored = cli("evaluate", out / "images", "--manifest", manifest, "--tiny-models", "--segmenter", "none",
                 "--bootstrap", "20", "--out", out / "évaluation 2")
    assert scored.exit_code == 0, scored.output
    assert cli("report", out).exit_code == 0 and (out / "report" / "report.html").is_file()
    study = cli("study", "make", out, "--pairs", "lora-4:tlora-4", "--n", "1", "--raters", "1", "--manifest",
                manifest, "--out", out / "étude")
    assert study.exit_code == 0, study.output
    assert (out / "étude" / "key.csv").is_file()
    bad = data / "bad.toml"
    bad.write_text('[[concepts]]\nid = "chat noir é"\nfolder = "chat noir é"\nclass_word = "chat"\n',
                   encoding="utf-8")
    assert_one_line_error(cli("run", "--preset", preset, "--concepts", bad, "--out", tmp_path / "other"),
                          "concept id 'chat noir é' is not a safe name")
    assert not (tmp_path / "other").exists()


# ---- 7. an image deleted or corrupted after its job finished --------------------------------------------


def test_an_image_deleted_or_corrupted_after_its_job_finished_is_generated_again(finished, run_copy, tmp_path):
    gone = run_copy / "images/lora-4/rex/p00_i00.png"
    broken = run_copy / "images/lora-4/mug/p01_i00.png"
    gone.unlink()
    broken.write_bytes(broken.read_bytes()[:60])
    scored = cli("evaluate", run_copy / "images", "--manifest", finished["manifest"], "--tiny-models",
                 "--segmenter", "none", "--bootstrap", "20", "--out", tmp_path / "scores")
    assert scored.exit_code == EXIT_INCOMPLETE
    assert str(gone) in scored.stderr and str(broken) in scored.stderr
    report = cli("report", run_copy)
    assert report.exit_code == 0, report.output
    warning = [line for line in report.stderr.splitlines() if str(gone) in line]
    assert len(warning) == 1 and "2 images" in warning[0] and "missing or unreadable" in warning[0], report.stderr
    result = rerun(finished, run_copy)
    assert result.exit_code == 0, result.output
    assert "lora-4/rex/seed-0: 1 of its images" in result.stderr and "generating them again" in result.stderr
    assert "lora-4/mug/seed-0: 1 of its images" in result.stderr
    assert_same_results(results(finished["run"]), results(run_copy))  # the same pixels, so the same scores


# ---- 8. a failure while writing scores ------------------------------------------------------------------


def test_a_failure_writing_the_scores_is_one_line_and_the_jobs_stay_done(finished, run_copy, monkeypatch):
    for name in ("evaluation", "report"):
        shutil.rmtree(run_copy / name)
    (run_copy / "leaderboard.csv").unlink()
    markers = snapshot(run_copy / "jobs")
    with monkeypatch.context() as patch:
        disk_full(patch, "scores.csv")
        result = rerun(finished, run_copy)
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    line = error_line(result)
    assert line.startswith("error: scoring failed: no space left on device while writing "
                           f"'{run_copy / 'evaluation' / 'scores.csv'}'"), line
    assert "re-run the same command to score them" in line
    assert not (run_copy / "evaluation" / "scores.csv").exists() and not temporaries(run_copy)
    assert json.loads((run_copy / "summary.json").read_text())["done"] == 2
    with monkeypatch.context() as patch:
        read_only(patch, run_copy / "evaluation")
        result = rerun(finished, run_copy)
    assert result.exit_code == EXIT_INCOMPLETE, result.output
    line = error_line(result)
    assert "scoring failed: cannot write" in line and str(run_copy / "evaluation") in line, line
    assert snapshot(run_copy / "jobs") == markers  # every job stays done: nothing was trained or sampled again
    result = rerun(finished, run_copy)
    assert result.exit_code == 0, result.output
    assert snapshot(run_copy / "jobs") == markers
    pd.testing.assert_frame_equal(pd.read_csv(run_copy / "evaluation" / "scores.csv"),
                                  pd.read_csv(finished["run"] / "evaluation" / "scores.csv"))


# ---- 9. report on an empty, half-written or read-only folder --------------------------------------------


def test_report_on_an_empty_or_unscored_folder_names_what_is_missing(run_copy, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("report", empty), f"'{empty / 'evaluation' / 'per_method.csv'}' not found",
                          f"tlora-bench evaluate {empty}`")
    assert not (empty / "report").exists()
    for name in ("evaluation", "report"):
        shutil.rmtree(run_copy / name)
    assert_one_line_error(cli("report", run_copy), "not found", "re-run the same `tlora-bench run` command",
                          f"tlora-bench evaluate {run_copy / 'images'} --out {run_copy / 'evaluation'}")
    assert not (run_copy / "report").exists()


def test_report_on_a_half_written_evaluation_is_one_line(run_copy):
    shutil.rmtree(run_copy / "report")
    (run_copy / "evaluation" / "evaluation.json").unlink()  # what scoring cut short leaves
    assert_one_line_error(cli("report", run_copy), str(run_copy / "evaluation"), "evaluation.json",
                          "did not finish")
    assert not (run_copy / "report").exists()


def test_report_on_a_read_only_folder_or_a_full_disk_leaves_no_report_folder(run_copy, monkeypatch):
    old = snapshot(run_copy / "report")
    with monkeypatch.context() as patch:
        disk_full(patch, "report.html")
        assert_one_line_error(cli("report", run_copy), "no space left on device while writing", "report.html")
    assert snapshot(run_copy / "report") == old  # the old report stands whole
    shutil.rmtree(run_copy / "report")
    with monkeypatch.context() as patch:
        disk_full(patch, "is_vs_ts.png")
        assert_one_line_error(cli("report", run_copy), "no space left on device while writing", "is_vs_ts.png")
    assert not (run_copy / "report").exists()
    assert not [p for p in run_copy.iterdir() if p.name.startswith(".report")]
    with monkeypatch.context() as patch:
        read_only(patch, run_copy)
        line = assert_one_line_error(cli("report", run_copy), str(run_copy))
    assert "cannot write" in line and not (run_copy / "report").exists()
    assert cli("report", run_copy).exit_code == 0 and (run_copy / "report" / "report.html").is_file()
