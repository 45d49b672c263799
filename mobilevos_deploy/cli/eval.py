"""mvos-eval: DAVIS J&F of result masks against annotations or another backend's masks."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UserError
from ..files import check_writable
from ..metrics.evaluate import CSV_NAMES, evaluate, foreign_csvs, write_csvs
from . import user_errors


@click.command()
@click.option("--results", type=click.Path(path_type=Path), default=None,
              help="Result masks: <sequence>/<frame>.png, or one sequence's PNGs.")
@click.option("--baseline", type=click.Choice(["copy-first"]), default=None,
              help="Instead of --results: score the copy-the-first-mask baseline (every "
                   "frame gets the first annotation) against --annotations.")
@click.option("--annotations", type=click.Path(path_type=Path), default=None,
              help="Ground truth in the same layout (DAVIS Annotations/480p).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="Another run's masks as the reference (task-level parity).")
@click.option("--sequences", default=None, help="Comma list of sequences (default: all).")
@click.option("--csv", "csv_dir", type=click.Path(path_type=Path), default=None,
              help="Folder for global_results.csv and per-sequence_results.csv.")
@click.option("--void/--no-void", default=True, show_default=True,
              help="Ignore 255 (void) pixels; --no-void scores them as background, as the "
                   "official tool's semi-supervised pipeline does.")
@user_errors
def main(results: Path | None, baseline: str | None, annotations: Path | None,
         reference: Path | None, sequences: str | None, csv_dir: Path | None,
         void: bool) -> None:
    if (annotations is None) == (reference is None):
        raise click.UsageError("give exactly one of --annotations and --reference")
    if (results is None) == (baseline is None):
        raise click.UsageError("give exactly one of --results and --baseline")
    if baseline and annotations is None:
        raise click.UsageError("--baseline scores against --annotations")
    if csv_dir is not None:  # before scoring, whose work a late failure would lose
        check_writable(csv_dir, "--csv", folder=True)
        for name in CSV_NAMES:
            check_writable(csv_dir / name, "--csv")
        foreign = foreign_csvs(csv_dir) if csv_dir.is_dir() else []
        if foreign:
            raise UserError(f"{csv_dir} holds {', '.join(foreign)} that mvos-eval did not "
                            "write (another header); refusing to overwrite it. Choose "
                            "another --csv folder, or move the file away")
    wanted = [s.strip() for s in sequences.split(",") if s.strip()] if sequences else None
    result = evaluate(results, annotations or reference, wanted, use_void=void)
    click.echo("| Sequence | J-Mean | F-Mean |\n|---|---|---|")
    for row in result.sequence_rows():
        click.echo(f"| {row['Sequence']} | {row['J-Mean']:.3f} | {row['F-Mean']:.3f} |")
    g = result.global_row()
    click.echo("\n| " + " | ".join(g) + " |\n|" + "---|" * len(g))
    click.echo("| " + " | ".join(f"{v:.3f}" for v in g.values()) + " |")
    if csv_dir is not None:
        for path in write_csvs(result, csv_dir):
            click.echo(f"wrote {path}")
