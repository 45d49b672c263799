"""Where the GPU venv is: TensorFlow 2.17's analyzer and ai-edge-litert 2.3's GPU
accelerator, which cannot share the main venv with onnx2tf (it pins ai-edge-litert 2.1).

``make gpu-venv`` builds ``.venv-gpucheck``; ``MVOS_GPU_CHECKER`` may name another python.
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
