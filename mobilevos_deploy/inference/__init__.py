"""Running a video: the PyTorch reference tracker, the backends, the frame loop and the runner."""
