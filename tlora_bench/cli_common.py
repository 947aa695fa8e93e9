"""What every command group shares: one-line errors and the concept-data options."""

from __future__ import annotations

import sys

import click

from tlora_bench.errors import EXIT_ERROR, TloraBenchError
from tlora_bench.library_output import held_library_output


class ErrorLineGroup(click.Group):
    """A click group that turns TloraBenchError into `error: ...` on stderr and exit status 1, and a usage
    mistake (an unknown option, a missing argument, a path that does not exist) into one such line, exit 1 too:
    every user mistake exits 1 (click's own usage status, 2, is not used)."""

    def main(self, *args, **kwargs):
        kwargs["standalone_mode"] = False
        with held_library_output():  # library warnings come after the command, never before its error line
            try:
                return super().main(*args, **kwargs)
            except click.exceptions.NoArgsIsHelpError as e:  # a bare `tlora-bench` (or group) asks for its help
                click.echo(e.ctx.get_help())
                sys.exit(0)
            except click.UsageError as e:
                where = f"; see '{e.ctx.command_path} --help'" if e.ctx else ""
                click.echo(f"error: {e.format_message().rstrip('.')}{where}", err=True)
                sys.exit(EXIT_ERROR)
            except click.Abort:
                click.echo("error: aborted", err=True)
                sys.exit(EXIT_ERROR)

    def invoke(self, ctx: click.Context):
        from tlora_bench.interrupts import MESSAGE, Interrupted, stop_on_signals

        try:
            with stop_on_signals():  # SIGTERM too stops at a safe point, as Ctrl-C does
                return super().invoke(ctx)
        except TloraBenchError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt as e:  # every file is written atomically: a re-run goes on from here
            click.echo(MESSAGE, err=True)
            sys.exit(e.exit_status if isinstance(e, Interrupted) else Interrupted().exit_status)


data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Folder with one sub-folder per concept. Default: $TLORA_BENCH_DATA, then the checkout's concepts/, "
         "then the download cache.")
manifest_option = click.option(
    "--manifest", "manifest_path", type=click.Path(dir_okay=False), default=None,
    help="A user concept manifest (.toml). Default: the bundled DreamBooth manifest.")
