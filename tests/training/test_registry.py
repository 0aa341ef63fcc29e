"""Adapter registry: listing, resolution order, promotion history, rollback, deletion, names.

``write_adapter`` and ``make_peft_adapter`` are shared with the export and serving tests.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path

import pytest

from copilot.errors import InputError, NotFoundError, StateError
from copilot.settings import Settings
from training.registry import (
    METADATA_FILE,
    AdapterInfo,
    AdapterRegistry,
    default_adapter_name,
    validate_adapter_name,
)

OTHER_BASE = "Qwen2.5-0.5B-Instruct@0123456789"


def write_adapter(
    root: Path,
    name: str,
    created_at: str,
    base_model: str = "base@1",
    loss: float = 2.5,
    method: str | None = None,
) -> Path:
    """An adapter folder's registry metadata (the weights are a placeholder)."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    meta = {
        "created_at": created_at,
        "base_model": base_model,
        "author": "maria",
        "data_hash": "ab" * 32,
        "metrics": {"eval_loss_before": 3.4, "eval_loss_after": loss, "steps": 20},
        "training": {"lora_r": 16, **({"method": method} if method else {})},
    }
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    return folder


def make_peft_adapter(
    settings: Settings, name: str, *, seed: int, created_at: str, r: int = 4
) -> AdapterInfo:
    """A real peft LoRA adapter on the configured base, with random (non-zero) LoRA weights.

    Cheaper than training and just as real for loading, merging and serving: peft's
    default init makes B zero (the adapter would equal the base), so both A and B get
    random values here and the adapter visibly changes the logits.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from training.export import make_adapter_portable
    from training.model import base_model_id, load_base

    model, _ = load_base(settings, fresh=True)
    torch.manual_seed(seed)
    lora = LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=["q_proj", "v_proj"],
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    with torch.no_grad():  # kaiming-sized B would swamp the base; keep the change moderate
        for module_name, param in peft_model.named_parameters():
            if "lora_B" in module_name:
                param.mul_(0.05)
    folder = settings.adapters_dir / name
    peft_model.save_pretrained(folder)
    base_id = base_model_id(settings)
    make_adapter_portable(folder, base_id)
    meta = {
        "name": name,
        "created_at": created_at,
        "author": "maria",
        "base_model": base_id,
        "data_hash": f"{seed:064x}",
        "training": {"lora_r": r, "lora_alpha": 2 * r},
        "metrics": {"eval_loss_before": 3.4, "eval_loss_after": 3.0, "steps": 5},
    }
    (folder / METADATA_FILE).write_text(json.dumps(meta))
    return AdapterRegistry(settings.adapters_dir).get(name)


@pytest.fixture
def registry(tmp_path):
    root = tmp_path / "adapters"
    write_adapter(root, "20260101-090000-aaaa1111", "2026-01-01T09:00:00+00:00", loss=3.1)
    write_adapter(root, "20260301-090000-cccc3333", "2026-03-01T09:00:00+00:00", loss=2.2)
    write_adapter(root, "20260201-090000-bbbb2222", "2026-02-01T09:00:00+00:00", loss=2.7)
    (root / "20260401-090000-unfinished").mkdir()  # a run still training: no metadata yet
    return AdapterRegistry(root)


def test_list_is_oldest_first_and_skips_unfinished_runs(registry):
    adapters = registry.list()
    assert [a.name for a in adapters] == [
        "20260101-090000-aaaa1111",
        "20260201-090000-bbbb2222",
        "20260301-090000-cccc3333",
    ]
    assert adapters[1].metrics == {"eval_loss_before": 3.4, "eval_loss_after": 2.7, "steps": 20}
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
    assert "copilot adapters list" in str(info.value)
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


# --- promotion history and rollback ---------------------------------------------------

A, B, C = "20260101-090000-aaaa1111", "20260201-090000-bbbb2222", "20260301-090000-cccc3333"


def test_list_reads_method_rank_and_metrics(registry):
    write_adapter(registry.adapters_dir, "dpo-run", "2026-05-01T09:00:00+00:00", method="dpo")
    adapters = {a.name: a for a in registry.list()}
    assert adapters["dpo-run"].method == "dpo"
    assert adapters[A].method == "sft"
    assert adapters[A].lora_r == 16
    assert adapters[A].metrics == {"eval_loss_before": 3.4, "eval_loss_after": 3.1, "steps": 20}
    assert adapters[A].created_at == "2026-01-01T09:00:00+00:00"


def test_rollback_walks_back_through_the_promotions(registry):
    registry.promote(A)
    registry.promote(B)
    registry.promote(B)  # promoting the current one again records nothing
    registry.promote(C)
    assert [p.name for p in registry.history()] == [A, B, C]
    pointer = json.loads(registry.pointer_path.read_text())
    assert pointer["name"] == C
    assert [e["name"] for e in pointer["history"]] == [A, B, C]

    result = registry.rollback()
    assert (result.current.name, result.rolled_back_from, result.skipped) == (B, C, [])
    assert result.current.promoted
    assert registry.resolve(None).name == B
    assert [(p.name, p.via) for p in registry.history()] == [(A, "promote"), (B, "rollback")]

    assert registry.rollback().current.name == A
    with pytest.raises(StateError, match="no earlier promotion") as info:
        registry.rollback()
    assert A in str(info.value) and "copilot adapters promote" in str(info.value)
    assert registry.promoted().name == A  # a refused rollback changes nothing


def test_rollback_without_a_promotion_is_a_state_error(registry):
    with pytest.raises(StateError, match="no adapter is promoted"):
        registry.rollback()
    assert not registry.pointer_path.exists()


def test_rollback_passes_over_deleted_and_foreign_adapters(registry):
    write_adapter(registry.adapters_dir, "foreign", "2026-04-01T09:00:00+00:00", OTHER_BASE)
    for name in (A, "foreign", B, C):
        registry.promote(name)
    registry.delete(B)

    result = registry.rollback(expected_base="base@1")

    assert result.current.name == A
    assert result.rolled_back_from == C
    assert result.skipped == [f"foreign (trained on {OTHER_BASE})"]
    assert [p.name for p in registry.history()] == [A]


def test_a_pointer_without_history_or_edited_by_hand_still_rolls_back(registry):
    registry.pointer_path.write_text(json.dumps({"name": A, "promoted_at": "2026-01-02"}))
    assert [p.name for p in registry.history()] == [A]
    registry.promote(B)
    registry.pointer_path.write_text(
        json.dumps({**json.loads(registry.pointer_path.read_text()), "name": C})
    )
    assert registry.resolve(None).name == C
    assert registry.rollback().current.name == B


def test_promoting_an_adapter_of_another_base_is_refused(registry):
    write_adapter(registry.adapters_dir, "foreign", "2026-04-01T09:00:00+00:00", OTHER_BASE)
    registry.promote(A, expected_base="base@1")
    with pytest.raises(InputError) as info:
        registry.promote("foreign", expected_base="base@1")
    message = str(info.value)
    assert "'foreign'" in message and OTHER_BASE in message and "'base@1'" in message
    assert "copilot adapters list" in message
    assert registry.promoted().name == A


def test_resolve_refuses_an_adapter_of_another_base(registry):
    write_adapter(registry.adapters_dir, "foreign", "2026-04-01T09:00:00+00:00", OTHER_BASE)
    # The newest adapter is foreign: the fallback passes over it.
    assert registry.resolve(None, expected_base="base@1").name == C
    assert registry.resolve(None).name == "foreign"
    with pytest.raises(InputError, match=OTHER_BASE):
        registry.resolve("foreign", expected_base="base@1")

    registry.pointer_path.write_text(json.dumps({"name": "foreign"}))  # promoted by hand
    with pytest.raises(StateError, match="the promoted adapter 'foreign'") as info:
        registry.resolve(None, expected_base="base@1")
    assert "copilot adapters rollback" in str(info.value)
    assert registry.resolve(None).name == "foreign"  # no expectation, no check


# --- deletion --------------------------------------------------------------------------


def test_delete_removes_the_folder_and_its_history_entries(registry):
    registry.promote(B)
    registry.promote(C)
    deletion = registry.delete(B)
    assert (deletion.name, deletion.kind, deletion.was_promoted, deletion.promoted) == (
        B,
        "adapter",
        False,
        C,
    )
    assert not (registry.adapters_dir / B).exists()
    assert [a.name for a in registry.list()] == [A, C]
    assert [p.name for p in registry.history()] == [C]
    assert not [p for p in registry.adapters_dir.iterdir() if p.name.startswith(".trash-")]
    with pytest.raises(NotFoundError, match="copilot adapters list"):
        registry.delete(B)


def test_delete_of_the_promoted_adapter_needs_force_and_then_rolls_back(registry):
    registry.promote(A)
    registry.promote(C)
    with pytest.raises(StateError, match="--force") as info:
        registry.delete(C)
    assert "copilot adapters rollback" in str(info.value)
    assert (registry.adapters_dir / C).is_dir()

    deletion = registry.delete(C, force=True)
    assert (deletion.was_promoted, deletion.promoted) == (True, A)
    assert registry.promoted().name == A
    assert [(p.name, p.via) for p in registry.history()] == [(A, "rollback")]

    # With no earlier promotion left, nothing is promoted: the newest serves again.
    deletion = registry.delete(A, force=True)
    assert (deletion.was_promoted, deletion.promoted) == (True, None)
    assert not registry.pointer_path.exists()
    assert registry.resolve(None).name == B


def _write_run(root: Path, name: str, state: str, pid: int) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    run = {"state": state, "pid": pid, "host": socket.gethostname(), "max_steps": 40}
    (folder / "run.json").write_text(json.dumps(run))
    (folder / "progress.jsonl").write_text(json.dumps({"event": "step", "step": 12}) + "\n")
    return folder


def test_delete_refuses_a_running_run_and_removes_a_failed_one(registry):
    running = _write_run(registry.adapters_dir, "20260501-running", "running", os.getpid())
    with pytest.raises(StateError, match="still running") as info:
        registry.delete("20260501-running")
    assert f"pid {os.getpid()}" in str(info.value) and "step 12/40" in str(info.value)
    assert running.is_dir()

    _write_run(registry.adapters_dir, "20260502-failed", "failed", os.getpid())
    deletion = registry.delete("20260502-failed")
    assert (deletion.kind, deletion.was_promoted) == ("run", False)
    assert not (registry.adapters_dir / "20260502-failed").exists()

    # A folder that is neither an adapter nor a run is not the registry's to delete.
    with pytest.raises(NotFoundError):
        registry.delete("20260401-090000-unfinished")
    assert (registry.adapters_dir / "20260401-090000-unfinished").is_dir()


def test_delete_moves_to_trash_before_removing(registry, monkeypatch, caplog):
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("training.registry.shutil.rmtree", refuse)
    with caplog.at_level(logging.WARNING, logger="training.registry"):
        registry.delete(A)

    # The removal failed, yet the adapter is gone from every listing at once.
    assert A not in [a.name for a in registry.list()]
    trash = [p for p in registry.adapters_dir.iterdir() if p.name.startswith(".trash-")]
    assert len(trash) == 1 and trash[0].name.startswith(f".trash-{A}-")
    assert (trash[0] / METADATA_FILE).is_file()  # moved whole, not half-deleted
    assert "delete it by hand" in caplog.text
