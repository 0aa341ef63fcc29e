"""Preference pairs (won reply over lost reply, split by call) and a short real DPO run.

The fixture pairs of conftest.py hold one lost call with one usable reply; the
three lost calls below (written for these tests: replies that brush the objection
off, from calls that were lost) give each side of the split lost replies to pair.
"""

from __future__ import annotations

import json
import math

import pytest

from copilot.errors import InputError, StateError
from copilot.prompts import objection_messages
from copilot.schemas import Objection
from copilot.settings import TrainingSettings
from training.dataset import build_examples
from training.dpo import train_preference_adapter
from training.preference import build_preference_pairs, pair_objections, preference_hash
from training.registry import AdapterRegistry
from training.runs import DONE, STOPPED, RunFolder

from .conftest import make_objections, with_lost_calls

RECIPE = TrainingSettings(eval_fraction=0.25, seed=13)


@pytest.fixture(scope="module")
def mixed() -> list[Objection]:
    return with_lost_calls()


def test_chosen_is_a_won_reply_and_rejected_a_lost_reply_of_the_same_type(mixed):
    pairs = pair_objections(mixed, RECIPE)
    by_reply = {(o.call_id, o.reply_text): o for o in mixed}

    assert len(pairs.train) == 24 and len(pairs.eval) == 9
    for pair in pairs.train + pairs.eval:
        chosen = by_reply[(pair.chosen_call_id, pair.chosen)]
        rejected = by_reply[(pair.rejected_call_id, pair.rejected)]
        assert chosen.polarity == 1 and rejected.polarity == -1
        assert chosen.type == rejected.type == pair.type
        assert (
            pair.objection == chosen.customer_text
        )  # the prompt is what the chosen reply answered
        assert pair.rejected_objection == rejected.customer_text
    # Every won reply whose type has a lost reply on its side of the split is in one pair.
    chosen_keys = [(p.chosen_call_id, p.chosen) for p in pairs.train + pairs.eval]
    assert len(chosen_keys) == len(set(chosen_keys))
    assert len(chosen_keys) == 33 and pairs.unpaired == 0

    # Without lost-kite the lost split holds out lost-iris, whose one usable reply is about
    # price: the held-out won replies of other types (4 of won-acme, 3 of won-delta) pair
    # with nothing rather than with a training call's reply.
    fewer = pair_objections([o for o in mixed if o.call_id != "lost-kite"], RECIPE)
    assert "lost-iris" in fewer.eval_calls
    assert fewer.unpaired == 7
    assert {(p.type, p.rejected_call_id) for p in fewer.eval} == {("price", "lost-iris")}


def test_split_is_by_call_and_no_held_out_call_is_in_a_train_pair(mixed):
    pairs = pair_objections(mixed, RECIPE)

    train_pair_calls = {c for p in pairs.train for c in (p.chosen_call_id, p.rejected_call_id)}
    eval_pair_calls = {c for p in pairs.eval for c in (p.chosen_call_id, p.rejected_call_id)}
    assert not train_pair_calls & set(pairs.eval_calls)
    assert eval_pair_calls <= set(pairs.eval_calls)
    assert not set(pairs.train_calls) & set(pairs.eval_calls)
    # The held-out won calls are those SFT holds out; one of the four lost calls is held out.
    sft_eval_calls = build_examples(mixed, RECIPE)[3]
    assert pairs.eval_calls == sorted([*sft_eval_calls, "lost-lark"])
    assert sft_eval_calls == ["won-acme", "won-delta"]


def test_split_and_hash_are_seeded(mixed):
    pairs = pair_objections(mixed, RECIPE)
    again = pair_objections(mixed, RECIPE)
    assert (again.train, again.eval) == (pairs.train, pairs.eval)
    assert preference_hash(again) == preference_hash(pairs)
    assert len(preference_hash(pairs)) == 64

    other = pair_objections(mixed, RECIPE.model_copy(update={"seed": 14}))
    assert other.eval_calls != pairs.eval_calls
    assert preference_hash(other) != preference_hash(pairs)


def test_back_channel_replies_are_left_out(mixed):
    pairs = pair_objections(mixed, RECIPE)
    used = {p.rejected for p in pairs.train + pairs.eval}
    assert "Okay, bye." not in used  # 10 characters < training.min_reply_chars=20
    assert pairs.short_replies == 1
    assert "Well, that's our price, take it or leave it." in used


def test_one_class_or_empty_data_is_refused(mixed):
    won_only = [o for o in mixed if o.polarity == 1]
    with pytest.raises(StateError, match="33 have a usable reply from a positive call and 0"):
        build_preference_pairs(won_only, RECIPE)
    with pytest.raises(StateError, match="ingest lost calls"):
        build_preference_pairs(won_only, RECIPE)
    with pytest.raises(StateError, match="ingest won calls"):
        build_preference_pairs([o for o in mixed if o.polarity == -1], RECIPE)
    with pytest.raises(StateError, match="no objections"):
        build_preference_pairs([], RECIPE)
    # One lost call with usable replies cannot be split.
    with pytest.raises(StateError, match="8 positive- and 1 negative-outcome"):
        build_preference_pairs(make_objections(), RECIPE)


def test_datasets_hold_the_sft_chat_format(mixed):
    data = build_preference_pairs(mixed, RECIPE)
    assert (len(data.train), len(data.eval)) == (24, 9)
    row, pair = data.train[0], data.train_pairs[0]
    assert row["prompt"] == objection_messages(pair.objection)
    assert row["chosen"] == [{"role": "assistant", "content": pair.chosen}]
    assert row["rejected"] == [{"role": "assistant", "content": pair.rejected}]
    assert data.pairing == "random" and data.seed == 13
    assert data.data_hash == preference_hash(pair_objections(mixed, RECIPE))


@pytest.mark.slow
def test_similarity_pairing_picks_the_closest_lost_objection(mixed, settings):
    import numpy as np

    from rag.embed import SentenceEmbedder

    embed = SentenceEmbedder(settings).encode
    pairs = pair_objections(mixed, RECIPE, embed)
    assert pairs.pairing == "embedding"
    assert len(pairs.train) == 24 and len(pairs.eval) == 9

    # For each held-out pair, recompute every same-type lost objection on its side by hand.
    eval_lost = [o for o in mixed if o.polarity == -1 and o.call_id in pairs.eval_calls]
    for pair in pairs.eval:
        candidates = [o.customer_text for o in eval_lost if o.type == pair.type]
        vectors = embed([pair.objection, *candidates])
        scores = vectors[1:] @ vectors[0]
        assert pair.rejected_objection == candidates[int(np.argmax(scores))]
        assert pair.similarity == pytest.approx(float(scores.max()), abs=1e-3)
    random_pairs = pair_objections(mixed, RECIPE)
    assert preference_hash(random_pairs) != preference_hash(pairs)


# --- a real DPO run: 6 steps, stopped after 3 and resumed --------------------------


@pytest.fixture(scope="module")
def dpo_run(settings, mixed, base):
    """One 6-step DPO run on SmolLM2, stopped by a STOP file at step 3 and resumed.

    Returns the stopped result, what its folder held while stopped, and the final result.
    """
    recipe = settings.with_training({"batch_size": 2, "log_every": 2, "checkpoint_every": 50})

    def stop_after_step_two(step: int, loss: float) -> None:
        if step == 2:
            RunFolder(recipe.adapters_dir / "dpo-test").request_stop()  # seen after step 3

    stopped = train_preference_adapter(
        recipe, mixed, max_steps=6, name="dpo-test", author="maria", progress=stop_after_step_two
    )
    folder = RunFolder(stopped.path)
    while_stopped = {
        "status": folder.status(),
        "checkpoints": sorted(p.name for p in folder.checkpoints_dir.iterdir() if p.is_dir()),
        "checkpoint_files": {p.name for p in (folder.checkpoints_dir / "step-3").iterdir()},
        "finished": folder.finished,
        "stop_file": (folder.path / "STOP").exists(),
    }
    final = train_preference_adapter(recipe, mixed, resume=True)
    return stopped, while_stopped, final


@pytest.mark.slow
def test_stop_checkpoints_and_resume_finishes(dpo_run):
    stopped, while_stopped, final = dpo_run

    assert (stopped.state, stopped.steps, stopped.max_steps) == (STOPPED, 3, 6)
    assert stopped.eval_loss_after is None and stopped.method == "dpo"
    status = while_stopped["status"]
    assert (status.state, status.step, status.method, status.resumable) == (STOPPED, 3, "dpo", True)
    assert while_stopped["checkpoints"] == ["step-3"]  # checkpoint_every=50: only the stop's
    assert {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json"} <= (
        while_stopped["checkpoint_files"]
    )
    assert not while_stopped["finished"] and not while_stopped["stop_file"]

    assert (final.state, final.steps, final.name) == (DONE, 6, "dpo-test")
    records = list(RunFolder(final.path).progress())
    events = [(r["event"], r.get("step"), r.get("state")) for r in records]
    assert events == [
        ("eval", None, None),
        ("step", 2, None),
        ("step", 3, None),
        ("end", None, STOPPED),
        ("resume", 3, None),
        ("step", 4, None),
        ("step", 6, None),
        ("eval", None, None),
        ("end", None, DONE),
    ]
    steps = [r for r in records if r["event"] == "step"]
    assert all(r["max_steps"] == 6 and r["tokens_per_s"] > 0 for r in steps)
    assert steps[-1]["elapsed_s"] > steps[1]["elapsed_s"]  # time carries over the resume
    assert not RunFolder(final.path).checkpoints_dir.exists()  # a finished run drops them


@pytest.mark.slow
def test_dpo_loss_and_held_out_preference_move_the_right_way(dpo_run):
    _, _, final = dpo_run
    records = list(RunFolder(final.path).progress())
    losses = [r["loss"] for r in records if r["event"] == "step"]
    # Step 1 runs at warmup lr 0, so step 2 still sits at ln 2; by step 6 the loss is lower.
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)
    assert losses[-1] < math.log(2) - 0.02

    meta = json.loads((final.path / "copilot_adapter.json").read_text())
    metrics = meta["metrics"]
    assert metrics["eval_preference_accuracy"] > 0.5
    assert metrics["eval_reward_margin"] > 0
    assert metrics["eval_dpo_loss"] < math.log(2)
    assert metrics["eval_loss_before"] == pytest.approx(final.eval_loss_before)
    assert metrics["eval_loss_after"] == pytest.approx(final.eval_loss_after)


@pytest.mark.slow
def test_dpo_adapter_is_registered_with_the_sft_metadata_keys(dpo_run, settings):
    _, _, final = dpo_run
    meta = json.loads((final.path / "copilot_adapter.json").read_text())
    sft_keys = {
        "name", "created_at", "author", "base_model", "data_hash", "config", "training",
        "metrics", "train_examples", "eval_examples", "train_calls", "eval_calls", "versions",
    }  # fmt: skip
    assert sft_keys <= set(meta)
    assert meta["method"] == "dpo" and meta["training"]["method"] == "dpo"
    assert meta["author"] == "maria" and meta["resumes"] == 1
    assert meta["training"]["max_steps"] == 6
    assert (meta["train_examples"], meta["eval_examples"]) == (24, 9)
    assert meta["eval_calls"] == ["lost-lark", "won-acme", "won-delta"]
    assert meta["dpo"]["pairing"] == "random" and meta["dpo"]["beta"] == 0.1
    assert "trl" in meta["versions"]
    assert json.loads((final.path / "adapter_config.json").read_text())["r"] == 16

    info = AdapterRegistry(settings.adapters_dir).get("dpo-test")
    assert info.data_hash == final.data_hash


@pytest.mark.slow
def test_finished_or_taken_runs_are_refused(dpo_run, settings, mixed):
    with pytest.raises(StateError, match="cannot be resumed"):
        train_preference_adapter(settings, mixed, resume=True, name="dpo-test")
    with pytest.raises(InputError, match="already exists"):
        train_preference_adapter(settings, mixed, max_steps=1, name="dpo-test")
