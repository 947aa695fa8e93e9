"""`tlora-bench synthetic pretrain|check`: the click group; cli.py registers it with `main.add_command(synthetic)`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tlora_bench.cli_common import ErrorLineGroup


@click.group(cls=ErrorLineGroup)
def synthetic() -> None:
    """The synthetic scene model (docs/synthetic.md): pretrain it, check how well it follows its prompts."""


@synthetic.command("pretrain")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Folder to write the model to (replaced when it exists); load it with --model-path.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Training steps (default: the recipe's).")
@click.option("--seed", type=int, default=None, help="Seed of the weights' init, the scenes and the noise.")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads (default: the recipe's).")
def pretrain_command(out: str, steps: int | None, seed: int | None, threads: int | None) -> None:
    """Pretrain the scene model from scratch on random scenes (CPU; the default recipe takes about 50 minutes on two
    cores) and save it with its recipe and SHA-256 sums."""
    from dataclasses import replace

    from tlora_bench.synthetic.pretrain import PretrainRecipe, pretrain

    given = {"steps": steps, "seed": seed, "threads": threads}
    recipe = replace(PretrainRecipe(), **{k: v for k, v in given.items() if v is not None})

    def report(step: int, loss: float) -> None:
        if step % 100 == 0 or step == recipe.steps:
            click.echo(f"step {step}/{recipe.steps}: loss {loss:.4f}")

    summary = pretrain(Path(out), recipe, on_step=report)
    click.echo(f"saved to {out} in {summary['seconds']:.0f}s (final loss {summary['final_loss']}); check it: "
               f"tlora-bench synthetic check --model-path {out}")


@synthetic.command("check")
@click.option("--model-path", type=click.Path(file_okay=False, exists=True), default=None,
              help="A scene model folder (default: the shipped one).")
@click.option("--samples", type=click.IntRange(1), default=192, show_default=True,
              help="Prompts (scenes drawn from pretraining's) to sample, one image each.")
@click.option("--seed", type=int, default=0, show_default=True, help="Draws the scenes and the sampling noise.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def check_command(model_path: str | None, samples: int, seed: int, as_json: bool) -> None:
    """How often the model's samples show each prompted attribute, read by the judges, and how often the judges
    agree with an independent reading (the nearest exact render)."""
    from tlora_bench.synthetic.check import check_model

    result = check_model(model_path, samples=samples, seed=seed)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{'attribute':<12} {'follows':>8} {'judges = nearest render':>24}")
    for name, share in result["following"].items():
        click.echo(f"{name:<12} {share:>8.1%} {result['judge_agreement'][name]:>24.1%}")
    click.echo(f"{samples} samples of {result['model']}")
