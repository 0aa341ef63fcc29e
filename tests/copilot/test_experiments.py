"""Experiments: validation, one running at a time, deterministic and sticky assignment."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from copilot.errors import InputError, NotFoundError, StateError
from copilot.experiments import ExperimentRow, ExperimentStore, Variant, bucket, hash_point

TWO = [{"name": "control", "adapter": "base"}, {"name": "dpo-v2", "adapter": "dpo-v2"}]


def damage_weights(store: ExperimentStore, experiment_id: str, weights: list[float]) -> None:
    """Stored weights no create or update would write now (an older row, a manual edit)."""
    experiment = store.get(experiment_id)
    variants = [
        {"name": v.name, "adapter": v.adapter, "prompt_version": v.prompt_version, "weight": w}
        for v, w in zip(experiment.variants, weights, strict=True)
    ]
    with Session(store.engine) as session, session.begin():
        session.execute(
            update(ExperimentRow).where(ExperimentRow.id == experiment_id).values(variants=variants)
        )


@pytest.fixture
def store(tmp_path: Path) -> ExperimentStore:
    return ExperimentStore(tmp_path / "copilot.db")


def test_create_normalises_weights_and_defaults_control_to_the_first(store) -> None:
    exp = store.create(
        "价格异议回复 price replies",
        [
            {"name": "control", "adapter": "base", "weight": 2},
            {"name": "dpo-v2", "adapter": "dpo-v2", "prompt_version": "default@3", "weight": 6},
        ],
        created_by="maria",
        known_adapters={"dpo-v2"},
    )
    assert exp.status == "running" and exp.control == "control" and exp.created_by == "maria"
    assert exp.id.startswith("price-replies-") and "/" not in exp.id
    assert exp.variants == (
        Variant("control", "base", None, 0.25),
        Variant("dpo-v2", "dpo-v2", "default@3", 0.75),
    )
    assert store.get(exp.id) == exp
    assert store.running() == exp
    assert [e.id for e in store.list()] == [exp.id]


def test_a_name_in_chinese_alone_still_gets_an_id(store) -> None:
    exp = store.create("价格异议", TWO, control="dpo-v2")
    assert exp.id.startswith("exp-") and exp.control == "dpo-v2" and exp.name == "价格异议"


@pytest.mark.parametrize(
    ("variants", "control", "message"),
    [
        ([{"name": "only"}], None, "needs 2 to 20 variants"),
        ([{"name": "a"}, {"name": "a"}], None, "repeated: a"),
        ([{"name": "a"}, {"name": " "}], None, "variant 2's name is empty"),
        ([{"name": "a"}, {"name": "b", "weight": 0}], None, "weights must be positive"),
        ([{"name": "a"}, {"name": "b", "weight": -1}], None, "weights must be positive"),
        ([{"name": "a"}, {"name": "b", "weight": float("nan")}], None, "positive"),
        ([{"name": "a"}, {"name": "b", "weight": "much"}], None, "give a positive number"),
        ([{"name": "a"}, {"name": "b/c"}], None, "contains '/'"),
        ([{"name": "a"}, {"name": "b", "adaptor": "x"}], None, "unknown fields adaptor"),
        ([{"name": "a"}, {"name": "b", "adapter": "nope"}], None, "not registered"),
        ([{"name": "a"}, {"name": "b", "prompt_version": ""}], None, "prompt_version is blank"),
        (TWO, "treatment", "control 'treatment' is not one of the variants"),
        (
            [{"name": "a", "weight": 1e308}, {"name": "b", "weight": 1e308}],
            None,
            r"variants' weight: the weights \(a 1e\+308, b 1e\+308\) sum to inf.*e\.g\. 1 and 3",
        ),
        (
            [{"name": "a", "weight": 5e-324}, {"name": "b", "weight": 1e300}],
            None,
            r"the weight of 'a' gets a share of 0 of the reps; give weights on a small common",
        ),
    ],
)
def test_bad_experiments_are_refused_with_the_reason(store, variants, control, message) -> None:
    with pytest.raises(InputError, match=message):
        store.create("bad", variants, control=control, known_adapters={"dpo-v2"})
    assert store.list() == []


def test_only_one_experiment_runs_at_a_time(store) -> None:
    first = store.create("first", TWO)
    with pytest.raises(StateError) as refused:
        store.create("second", TWO)
    assert f"experiment '{first.id}' (first) is still running" in str(refused.value)
    assert f"stop it first (POST /v1/experiments/{first.id}/stop)" in str(refused.value)

    stopped = store.stop(first.id)
    assert stopped.status == "stopped" and stopped.stopped_at is not None
    assert store.running() is None
    with pytest.raises(StateError, match="already stopped"):
        store.stop(first.id)

    second = store.create("second", TWO)
    assert store.running().id == second.id
    assert {e.id: e.status for e in store.list()} == {first.id: "stopped", second.id: "running"}


def test_a_second_process_cannot_start_another_running_experiment(tmp_path) -> None:
    # Two stores on one file stand for two server processes; the unique slot decides.
    one, two = ExperimentStore(tmp_path / "db"), ExperimentStore(tmp_path / "db")
    one.create("first", TWO)
    with pytest.raises(StateError, match="still running"):
        two.create("second", TWO)


def test_unknown_experiment_is_not_found(store) -> None:
    with pytest.raises(NotFoundError, match="no experiment 'nope'"):
        store.get("nope")
    with pytest.raises(NotFoundError):
        store.assign("nope", "rep-1")


def test_bucket_follows_the_weights_in_order() -> None:
    arms = (
        Variant("a", None, None, 0.2),
        Variant("b", None, None, 0.5),
        Variant("c", None, None, 0.3),
    )
    assert [bucket(p, arms).name for p in (0.0, 0.1999, 0.2, 0.6999, 0.7, 0.9999)] == [
        "a",
        "a",
        "b",
        "b",
        "c",
        "c",
    ]


def test_hash_point_is_fixed_across_processes() -> None:
    # The first 8 bytes of SHA-256("exp-1\x1frep-7") over 2^64, written down once: Python's
    # own hash() changes per process, and a rep must land in the same place after a restart.
    assert hash_point("exp-1", "rep-7") == 0.29631364626869083
    assert hash_point("exp-1", "rep-7") != hash_point("exp-2", "rep-7")


def test_assignment_is_deterministic_and_roughly_matches_the_weights(tmp_path) -> None:
    store = ExperimentStore(tmp_path / "a.db")
    exp = store.create("split", [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}])
    reps = [f"rep-{i}" for i in range(2000)]
    first = {rep: store.assign(exp.id, rep).name for rep in reps}

    counts = Counter(first.values())
    # 2000 reps at 25 %: sd = sqrt(2000 * 0.25 * 0.75) = 19.4, so 500 +- 78 is 4 sd.
    assert abs(counts["a"] - 500) < 78 and counts["a"] + counts["b"] == 2000

    # Same answer again, and from a fresh store that has no stored assignment to read:
    # the hash alone decides the first assignment.
    assert all(store.assign(exp.id, rep).name == first[rep] for rep in reps[:200])
    assert store.assignments(exp.id) == first
    other = ExperimentStore(tmp_path / "b.db")
    twin = other.create("split", [{"name": "a", "weight": 1}, {"name": "b", "weight": 3}])
    assert {rep: bucket(hash_point(exp.id, rep), twin.variants).name for rep in reps} == first


def test_weight_edits_move_new_reps_only(store) -> None:
    exp = store.create("sticky", [{"name": "a"}, {"name": "b"}])
    early = {f"rep-{i}": store.assign(exp.id, f"rep-{i}").name for i in range(300)}
    assert set(early.values()) == {"a", "b"}

    edited = store.update_weights(exp.id, {"a": 1, "b": 999})
    assert edited.weights == pytest.approx({"a": 0.001, "b": 0.999})
    assert edited.weights_changed_at is not None

    # Every early rep keeps the variant they had, including those the new weights would move.
    assert {rep: store.assign(exp.id, rep).name for rep in early} == early
    # (An early "a" rep whose point falls in a's new 0.1 % share would stay put anyway.)
    moved = [r for r, v in early.items() if v == "a" and hash_point(exp.id, r) >= 0.001]
    assert len(moved) > 100
    assert all(bucket(hash_point(exp.id, r), edited.variants).name == "b" for r in moved)
    # New reps follow the new weights.
    late = Counter(store.assign(exp.id, f"late-{i}").name for i in range(300))
    assert late["b"] >= 295

    with pytest.raises(InputError, match="give a weight for every variant"):
        store.update_weights(exp.id, {"a": 1})
    with pytest.raises(InputError, match="positive"):
        store.update_weights(exp.id, {"a": 1, "b": 0})


def test_a_stopped_experiment_keeps_assignments_and_assigns_no_one_new(store) -> None:
    exp = store.create("done", TWO)
    kept = store.assign(exp.id, "销售-王")
    store.stop(exp.id)
    assert store.assign(exp.id, "销售-王") == kept
    with pytest.raises(StateError, match="is stopped and rep 'new-rep' was never assigned"):
        store.assign(exp.id, "new-rep")
    with pytest.raises(InputError, match="rep_id is empty"):
        store.assign(exp.id, "  ")


def test_weight_edits_that_overflow_are_refused(store) -> None:
    exp = store.create("price", TWO)
    with pytest.raises(InputError, match="sum to inf"):
        store.update_weights(exp.id, {"control": 1e308, "dpo-v2": 1e308})
    assert store.get(exp.id).weights == {"control": 0.5, "dpo-v2": 0.5}
