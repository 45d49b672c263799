"""Typed student configs and the variant registry.

A variant is a frozen :class:`StudentConfig`; the registry maps the names users type
(``--variant mobilenetv2``) to configs. The paper's parameter counts (Table 4 of
MobileVOS) are kept beside each config so tests can hold the networks to them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import UserError

KEY_BACKBONES = ("resnet18", "resnet34", "mobilenetv2")  # resnet34: the teacher's
MAX_WIDTH = 4096  # channels of any layer a config may ask for (a typo must not allocate GBs)


@dataclass(frozen=True)
class StudentConfig:
    """Channel choices of one student. All strides are relative to the input frame."""

    key_backbone: str  # "resnet18" | "resnet34" | "mobilenetv2": key (query) encoder trunk
    key_dim: int = 64  # Ck: channels of memory / query keys
    value_dim: int = 96  # Cv: channels of memory values
    query_dim: int = 64  # channels of the query-side stride-16 features fed to the decoder
    decoder_dims: tuple[int, int, int] = (128, 64, 32)  # decoder widths at strides 16, 8, 4
    aspp: bool = True  # ASPP on the fused stride-16 features before upsampling
    aspp_rates: tuple[int, ...] = (2, 4, 6)  # dilations of the 3x3 ASPP branches
    value_in_channels: int = 2  # value encoder input: object mask + "other objects" mask

    def __post_init__(self) -> None:
        if self.key_backbone not in KEY_BACKBONES:
            raise UserError(
                f"key_backbone must be one of {', '.join(KEY_BACKBONES)}, got {self.key_backbone!r}"
            )
        def whole(value: object) -> bool:
            return type(value) is int and 1 <= value <= MAX_WIDTH

        for name in ("key_dim", "value_dim", "query_dim", "value_in_channels"):
            if not whole(getattr(self, name)):
                raise UserError(f"{name} must be an integer in 1..{MAX_WIDTH}, got "
                                f"{getattr(self, name)!r}")
        if not (isinstance(self.decoder_dims, tuple) and len(self.decoder_dims) == 3
                and all(whole(v) for v in self.decoder_dims)):
            raise UserError(f"decoder_dims must be 3 integers in 1..{MAX_WIDTH}, got "
                            f"{self.decoder_dims!r}")
        if not (isinstance(self.aspp_rates, tuple) and 1 <= len(self.aspp_rates) <= 8
                and all(type(v) is int and 1 <= v <= 64 for v in self.aspp_rates)):
            raise UserError(f"aspp_rates must be 1 to 8 integers in 1..64, got "
                            f"{self.aspp_rates!r}")
        if type(self.aspp) is not bool:
            raise UserError(f"aspp must be true or false, got {self.aspp!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudentConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown config fields {unknown}; known fields: {sorted(known)}")
        values = dict(data)
        for name in ("decoder_dims", "aspp_rates"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class Variant:
    name: str
    config: StudentConfig
    paper_params: float  # parameters reported by the paper (Table 4), in millions
    description: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, Variant] = {}


def register(variant: Variant) -> Variant:
    if variant.name in _REGISTRY:
        raise ValueError(f"variant {variant.name!r} registered twice")
    _REGISTRY[variant.name] = variant
    return variant


def variant_names() -> list[str]:
    return list(_REGISTRY)


def get_variant(name: str) -> Variant:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(
            f"unknown variant {name!r}; choose one of: {', '.join(_REGISTRY)}"
        ) from None


register(
    Variant(
        name="resnet18",
        config=StudentConfig(
            key_backbone="resnet18",
            key_dim=64,
            value_dim=192,
            query_dim=256,
            decoder_dims=(192, 128, 64),
            aspp=True,
        ),
        paper_params=8.1,
        description="ResNet18 key encoder, MobileNetV2 value encoder, ASPP",
    )
)
register(
    Variant(
        name="mobilenetv2",
        config=StudentConfig(key_backbone="mobilenetv2", aspp=True),
        paper_params=2.5,
        description="MobileNetV2 key and value encoders, ASPP",
    )
)
register(
    Variant(
        name="mobilenetv2-noaspp",
        config=StudentConfig(key_backbone="mobilenetv2", aspp=False),
        paper_params=1.9,
        description="MobileNetV2 key and value encoders, no ASPP (the real-time phone model)",
    )
)

DEFAULT_VARIANT = "mobilenetv2-noaspp"
