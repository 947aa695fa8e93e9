from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from tests.cli_helpers import assert_one_line_error as _one_line_error
from tests.conftest import TINY_MANIFEST, make_tiny_dataset
from tlora_bench.cli import main


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)



def test_concepts_list_and_show(data_root: Path):
    result = run("concepts", "list", "--concepts", "dreambooth25")
    assert result.exit_code == 0 and "25 concepts" in result.output and "dog3 " not in result.output
    shown = run("concepts", "show", "dog6", "--data-dir", str(data_root))
    assert shown.exit_code == 0 and "02_mask.png" in shown.output and "class_word   dog" in shown.output


def test_unknown_concept_did_you_mean():
    _one_line_error(run("concepts", "show", "dgo6"), "unknown concept 'dgo6'", "did you mean 'dog6'")


def test_validate_real_data(data_root: Path):
    result = run("concepts", "validate", "--concepts", "dog6,teapot", "--data-dir", str(data_root))
    assert result.exit_code == 0 and "ok: 2 concepts, 10 images" in result.output


def test_validate_missing_data_folder(tmp_path: Path):
    result = run("concepts", "validate", "--data-dir", str(tmp_path / "nope"))
    _one_line_error(result, "does not exist", "--data-dir", "concepts download")


def test_validate_corrupt_image_lists_the_file_and_fails(tmp_path: Path):
    make_tiny_dataset(tmp_path, {"rex": ["00.jpg", "01.jpg"], "mug": ["00.jpg", "01.jpg", "02.jpg"]})
    (tmp_path / "mug" / "01.jpg").write_bytes(b"\xff\xd8 truncated")
    manifest = tmp_path / "m.toml"
    manifest.write_text(TINY_MANIFEST)
    result = run("concepts", "validate", "--manifest", str(manifest))
    assert result.exit_code == 1
    assert "mug" in result.stderr and "01.jpg" in result.stderr and "1 problems in 2 concepts" in result.stderr


def test_download_failure_exits_nonzero(tmp_path: Path):
    result = run("concepts", "download", "--dest", str(tmp_path / "d"), "--url", (tmp_path / "x.zip").as_uri())
    _one_line_error(result, "could not download", "--data-dir")


def test_prompts_command_prints_all_170():
    result = run("prompts", "--concept", "dog6")
    lines = result.stdout.strip().splitlines()
    assert result.exit_code == 0 and lines[0] == "seed\timage\tprompt" and len(lines) == 171
    assert lines[1] == "1385\t0\ta photo of a sks dog"


def test_config_flags_and_bad_values():
    result = run("config", "--preset", "smoke", "--ranks", "8", "--set", "r_min=2")
    assert result.exit_code == 0 and '"r_min": 2' in result.output
    _one_line_error(run("config", "--preset", "smoke", "--set", "rnaks=8"), "did you mean 'ranks'")


def test_console_script_exit_status_and_no_traceback():
    # The installed entry point, in a real process: a user error is one line on stderr and exit status 1.
    result = subprocess.run([sys.executable, "-m", "tlora_bench.cli", "concepts", "show", "../etc"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown concept '../etc'")


def test_readme_command_reference_is_current():
    from tlora_bench.cli_docs import END, START, cli_reference

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = readme.split(START, 1)[1].split(END, 1)[0]
    assert block.strip() == cli_reference().strip(), "run: python -m tlora_bench.cli_docs"


def test_set_values_are_not_overridden_by_flags_left_unset():
    assert '"ranks": [\n    8\n  ]' in run("config", "--set", "ranks=8").output
    _one_line_error(run("config", "--set", "ranks="), "config key 'ranks' must be positive integers")
    assert '"ranks": [\n    4\n  ]' in run("config", "--set", "ranks=8", "--ranks", "4").output  # flags win


def test_download_to_an_unwritable_place(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    result = run("concepts", "download", "--dest", str(blocker / "data"), "--url", "file:///x.zip")
    _one_line_error(result, "cannot write the dataset to", "choose another --dest")


def test_evaluate_reports_a_wrong_folder_before_a_missing_data_folder(tmp_path: Path):
    env = {"TLORA_BENCH_DATA": str(tmp_path / "no-data")}
    _one_line_error(run("evaluate", str(tmp_path / "nope"), env=env), "does not exist")
    _one_line_error(run("evaluate", str(tmp_path), env=env), "no 'images.jsonl' found")
