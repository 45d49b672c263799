"""Where the side venvs are, which cannot share the main venv with onnx2tf (it pins
ai-edge-litert 2.1 and numpy 1):

- the GPU venv: TensorFlow 2.17's analyzer and ai-edge-litert 2.3's GPU accelerator.
  ``make gpu-venv`` builds ``.venv-gpucheck``; ``MVOS_GPU_CHECKER`` may name another python.
- the litert-torch venv: the second converter (numpy 2, protobuf 7, about 2 GB).
  ``make litert-torch-venv`` builds ``.venv-litert-torch``; ``MVOS_LITERT_TORCH`` may name
  another python.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "MVOS_GPU_CHECKER"
DEFAULT_CHECKER = Path(__file__).resolve().parents[2] / ".venv-gpucheck" / "bin" / "python"


def checker_python() -> Path | None:
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured)
    return DEFAULT_CHECKER if DEFAULT_CHECKER.exists() else None


LITERT_TORCH_VAR = "MVOS_LITERT_TORCH"
DEFAULT_LITERT_TORCH = (Path(__file__).resolve().parents[2] / ".venv-litert-torch" / "bin"
                        / "python")


def litert_torch_python() -> Path | None:
    configured = os.environ.get(LITERT_TORCH_VAR)
    if configured:
        return Path(configured)
    return DEFAULT_LITERT_TORCH if DEFAULT_LITERT_TORCH.exists() else None
