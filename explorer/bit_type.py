"""Integer formats that observers quantize to."""

from __future__ import annotations

from dataclasses import dataclass, field

MIN_BITS = 2
MAX_BITS = 16


@dataclass(frozen=True)
class BitType:
    """An integer format: ``bits`` wide, signed or unsigned.

    ``lower_bound``/``upper_bound`` are the integer range the quantizer clamps to:
    signed ``[-2^(b-1), 2^(b-1)-1]``, unsigned ``[0, 2^b-1]``.
    """

    bits: int
    signed: bool
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int):
            raise TypeError(f"BitType.bits must be an int, got {type(self.bits).__name__} {self.bits!r}")
        if not MIN_BITS <= self.bits <= MAX_BITS:
            raise ValueError(f"BitType.bits must be between {MIN_BITS} and {MAX_BITS}, got {self.bits}")
        if not isinstance(self.signed, bool):
            raise TypeError(f"BitType.signed must be true or false, got {self.signed!r}")
        if self.name is None:
            object.__setattr__(self, "name", f"{'int' if self.signed else 'uint'}{self.bits}")

    @property
    def lower_bound(self) -> int:
        """Smallest representable integer."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def upper_bound(self) -> int:
        """Largest representable integer."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def levels(self) -> int:
        """Number of magnitude levels available to a symmetric quantizer of ``|x|``.

        This is the level count of TensorRT's entropy calibration: 128 for int8, 256 for uint8.
        """
        return 1 << (self.bits - 1) if self.signed else 1 << self.bits


INT8 = BitType(8, True, "int8")
UINT8 = BitType(8, False, "uint8")
INT4 = BitType(4, True, "int4")
UINT4 = BitType(4, False, "uint4")
INT16 = BitType(16, True, "int16")

BIT_TYPE_PRESETS: dict[str, BitType] = {bt.name: bt for bt in (INT8, UINT8, INT4, UINT4, INT16)}  # type: ignore[misc]
