"""Adapter registry: listing, resolution order, promotion pointer, names."""

from __future__ import annotations

import json

import pytest

from copilot.errors import InputError, NotFoundError
from training.registry import (
    METADATA_FILE,
    AdapterRegistry,
    default_adapter_name,
    validate_adapter_name,
)


def _write_adapter(root, name, created_at, base_model="base@1", loss=2.5):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    meta = {
        "created_at": created_at,
        "base_model": base_model,
        "author": "maria",
        "data_hash": "ab" * 32,
        "metrics": {"eval_loss_after": loss},
    }
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    return folder


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "adapters"
    _write_adapter(root, "20260101-090000-aaaa1111", "2026-01-01T09:00:00+00:00", loss=3.1)
    _write_adapter(root, "20260301-090000-cccc3333", "2026-03-01T09:00:00+00:00", loss=2.2)
    _write_adapter(root, "20260201-090000-bbbb2222", "2026-02-01T09:00:00+00:00", loss=2.7)
    (root / "20260401-090000-unfinished").mkdir()  # a run still training: no metadata yet
    return AdapterRegistry(root)


def test_list_is_oldest_first_and_skips_unfinished_runs(registry):
    adapters = registry.list()
    assert [a.name for a in adapters] == [
        "20260101-090000-aaaa1111",
        "20260201-090000-bbbb2222",
        "20260301-090000-cccc3333",
    ]
    assert adapters[1].metrics == {"eval_loss_after": 2.7}
    assert adapters[1].author == "maria"
    assert adapters[1].path == registry.adapters_dir / "20260201-090000-bbbb2222"
    assert not any(a.promoted for a in adapters)


def test_resolve_order_name_then_promoted_then_newest_then_base(registry, tmp_path):
    assert registry.resolve(None).name == "20260301-090000-cccc3333"  # newest

    promoted = registry.promote("20260101-090000-aaaa1111")
    assert promoted.promoted
    assert registry.promoted().name == "20260101-090000-aaaa1111"
    assert registry.resolve(None).name == "20260101-090000-aaaa1111"
    assert registry.resolve("20260201-090000-bbbb2222").name == "20260201-090000-bbbb2222"
    assert [a.name for a in registry.list() if a.promoted] == ["20260101-090000-aaaa1111"]

    registry.promote("20260201-090000-bbbb2222")  # rollback / switch: the pointer moves
    assert registry.resolve(None).name == "20260201-090000-bbbb2222"
    registry.unpromote()
    assert registry.resolve(None).name == "20260301-090000-cccc3333"

    assert AdapterRegistry(tmp_path / "nothing-here").resolve(None) is None


def test_pointer_to_a_deleted_adapter_falls_back_to_newest(registry):
    registry.promote("20260201-090000-bbbb2222")
    for f in (registry.adapters_dir / "20260201-090000-bbbb2222").iterdir():
        f.unlink()
    (registry.adapters_dir / "20260201-090000-bbbb2222").rmdir()
    assert registry.promoted() is None
    assert registry.resolve(None).name == "20260301-090000-cccc3333"


def test_unknown_adapter_raises_not_found_naming_it(registry):
    with pytest.raises(NotFoundError, match="no-such-adapter") as info:
        registry.get("no-such-adapter")
    assert "copilot status" in str(info.value)
    with pytest.raises(NotFoundError):
        registry.resolve("no-such-adapter")
    with pytest.raises(NotFoundError):
        registry.promote("no-such-adapter")


@pytest.mark.parametrize("bad", ["../etc", "a/b", "a\\b", ".hidden", "", "with.dot", "x" * 81])
def test_names_with_separators_are_refused(bad):
    with pytest.raises(InputError, match="not allowed"):
        validate_adapter_name(bad)


def test_default_name_is_timestamp_and_short_hash():
    from datetime import UTC, datetime

    name = default_adapter_name("0123456789abcdef", datetime(2026, 5, 4, 3, 2, 1, tzinfo=UTC))
    assert name == "20260504-030201-01234567"
    assert validate_adapter_name(name) == name
