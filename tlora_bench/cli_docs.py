"""The README's command reference, generated from the real CLI help.

`python -m tlora_bench.cli_docs` rewrites the block between the markers in README.md; a test fails when
the README is out of date.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tlora_bench.cli import main

START, END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"


def _leaf_contexts(ctx: click.Context) -> list[click.Context]:
    """A context for every runnable command below `ctx`, each with its real parents (inherited settings)."""
    command = ctx.command
    if not isinstance(command, click.Group):
        return [ctx]
    found = []
    for name in sorted(command.commands):
        sub = command.commands[name]
        if not sub.hidden:
            found += _leaf_contexts(click.Context(sub, info_name=name, parent=ctx))
    return found


def cli_reference() -> str:
    """Every command's --help text, as markdown."""
    root = click.Context(main, info_name="tlora-bench", terminal_width=100, **main.context_settings)
    parts = []
    for ctx in _leaf_contexts(root):
        parts.append(f"#### `{ctx.command_path}`\n\n```text\n{ctx.command.get_help(ctx).strip()}\n```\n")
    return "\n".join(parts)


def update_readme(readme: Path) -> bool:
    """Rewrite the reference block; return True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    new = f"{head}{START}\n{cli_reference()}{END}{tail}"
    if new != text:
        readme.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    readme = Path(sys.argv[1] if len(sys.argv) > 1 else "README.md")
    print(f"{readme}: {'updated' if update_readme(readme) else 'already up to date'}")
