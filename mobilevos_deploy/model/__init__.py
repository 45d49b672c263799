"""The student and its checkpoints: config registry, network, the memory queue,
deployable stages, checkpoints, size profile."""
