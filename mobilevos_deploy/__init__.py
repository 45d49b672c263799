"""mobilevos-deploy: MobileVOS students from PyTorch to verified, measured phone models.

Data flow, one module per stage:
    nn/          network parts (trunks, ASPP, memory read-out, decoder blocks)
    config.py    typed variant configs and the registry (``resnet18``, ``mobilenetv2``, ...)
    student.py   the student network assembled from the parts
    memory.py    the finite memory queue: state layout and its pure update function
    stages.py    deployable stages with tensor-only inputs (init graph, step graph)
    tracker.py   the streaming reference tracker (init / step / track)
    checkpoint.py, profile.py, synthetic.py, cli/
"""

__version__ = "0.1.0"
