"""Network parts of the students.

Naming used in every shape comment of this package:
    B      batch (one entry per object)
    H, W   frame height and width (multiples of 16)
    h, w   stride-16 feature size, H/16 and W/16
    Q      memory queue length (slots: first frame + Q-1 most recent frames)
    Ck     key channels, Cv value channels
    f4, f8, f16  features at strides 4, 8 and 16
All 4-D tensors are NCHW.
"""
