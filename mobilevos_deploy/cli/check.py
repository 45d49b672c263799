"""mvos-check: does each TFLite file run entirely on a phone GPU? (exit 0 yes, 1 no, 2 bad input)"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..export.gates.check import check_tflite, format_result
from . import user_errors


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@user_errors
def main(files: tuple[Path, ...]) -> None:
    """Check FILES (.tflite, ours or anyone's) with LiteRT's GPU accelerator and with
    TensorFlow 2.17's GPU-delegate analyzer; exit 0 only when both say every op of every
    file runs on the GPU."""
    result = check_tflite(list(files))
    click.echo(format_result(result))
    sys.exit(0 if result.passed else 1)
