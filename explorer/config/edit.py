"""Editing and comparing configs point by point: what the app's tuning and export are built on."""

from __future__ import annotations

from typing import Any

from explorer.config.errors import Locator
from explorer.config.quant_config import QuantConfig
from explorer.config.schema import ALL_POINTS, PointConfig, section_of


def point_changes(target: PointConfig, draft: PointConfig) -> dict[str, Any]:
    """The YAML keys to set so that ``target`` becomes ``draft`` (None removes a key)."""
    old, new = target.to_mapping(), draft.to_mapping()
    return {key: new.get(key) for key in dict.fromkeys((*new, *old)) if new.get(key) != old.get(key)}


def changed_points(
    base: QuantConfig, tuned: QuantConfig, num_blocks: int
) -> list[tuple[int, str, dict[str, tuple[Any, Any]]]]:
    """Every ``(block, point)`` whose resolved settings differ, with each changed key's ``(before, after)``.

    A key set on one side only (``symmetric``) has None on the other.
    """
    rows = []
    for block in range(num_blocks):
        for name in ALL_POINTS:
            before = base.point(name, block).to_mapping()
            changes = point_changes(base.point(name, block), tuned.point(name, block))
            if changes:
                rows.append((block, name, {key: (before.get(key), after) for key, after in changes.items()}))
    return rows


def apply_point(config: QuantConfig, name: str, block: int | None, draft: PointConfig) -> QuantConfig:
    """``config`` with point ``name`` set to ``draft`` in one block, or in all blocks (``block=None``).

    For all blocks, per-block overrides of that point are removed, so every block resolves to ``draft``.
    Warnings ``config`` already issued are not issued again.
    """
    changes = point_changes(config.point(name, block), draft)
    updated = config.with_point(name, block=block, **changes) if changes else config
    if block is not None:
        return updated
    data = updated.to_dict()
    section = section_of(name)
    for index in list(data.get("blocks", {})):
        entries = data["blocks"][index]
        entries.get(section, {}).pop(name, None)
        if section in entries and not entries[section]:
            del entries[section]
        if not entries:
            del data["blocks"][index]
    if "blocks" in data and not data["blocks"]:
        del data["blocks"]
    return QuantConfig._build(data, Locator(), config._found, stacklevel=2)
