"""Generation with the base model and a trained adapter."""

from __future__ import annotations

import dataclasses

import pytest

from copilot.errors import InputError
from training.generate import ReplyGenerator, clean_reply
from training.registry import AdapterRegistry

OBJECTION = "Your price is too high for a team of our size."
REFERENCES = ["We can split the licence into quarterly payments so it fits your budget."]


def test_clean_reply_cuts_at_the_next_speaker():
    assert clean_reply("Rep: Sure, we can do that. Customer: ok thanks") == "Sure, we can do that."
    assert clean_reply("Happy to help.\nCustomer: fine\nRep: great") == "Happy to help."
    assert clean_reply("Customer: too expensive\n\nI hear you. Can we talk?") == (
        "I hear you. Can we talk?"
    )
    assert clean_reply("价格可以分期。客户：太贵了") == "价格可以分期。"


def test_clean_reply_ends_at_a_paragraph_and_drops_reference_fences():
    assert clean_reply("Let me check the discount.\n\n**Both**\n\nYour choice.") == (
        "Let me check the discount."
    )
    assert (
        clean_reply("<<We can start with a smaller plan.>>") == "We can start with a smaller plan."
    )


@pytest.fixture(scope="module")
def short_settings(settings):
    generator = settings.models.generator.model_copy(update={"max_new_tokens": 40})
    return settings.model_copy(
        update={"models": settings.models.model_copy(update={"generator": generator})}
    )


@pytest.fixture(scope="module")
def adapter(settings, trained):
    return AdapterRegistry(settings.adapters_dir).get(trained[0].name)


@pytest.mark.slow
def test_base_and_adapter_replies(short_settings, base, adapter):
    generator = ReplyGenerator(short_settings)

    before = generator.reply(OBJECTION, REFERENCES, None)
    assert before and "Customer:" not in before

    tuned = generator.reply(OBJECTION, REFERENCES, adapter)
    assert tuned and "Customer:" not in tuned

    # The adapter is switched off for base requests: same greedy text as before loading it.
    assert generator.reply(OBJECTION, REFERENCES, None) == before
    # A second generator shares the loaded model and adapters.
    assert ReplyGenerator(short_settings).reply(OBJECTION, REFERENCES, adapter) == tuned

    answer = generator.chat([{"role": "user", "content": "Say hello to a new customer."}])
    assert answer.strip()


@pytest.mark.slow
def test_adapter_for_another_base_is_refused(short_settings, adapter):
    foreign = dataclasses.replace(adapter, base_model="Qwen2.5-0.5B-Instruct@0123456789")
    with pytest.raises(InputError, match="Qwen2.5-0.5B-Instruct@0123456789") as info:
        ReplyGenerator(short_settings).reply(OBJECTION, REFERENCES, foreign)
    assert "SmolLM2-135M-Instruct" in str(info.value)


def test_bad_chat_messages_are_refused(settings):
    generator = ReplyGenerator(settings)
    with pytest.raises(InputError, match="role"):
        generator.chat([{"role": "robot", "content": "hi"}])
    with pytest.raises(InputError, match="empty"):
        generator.reply("   ", [], None)


@pytest.mark.slow
def test_long_conversation_is_fitted_to_the_context(base):
    from training.generate import _fit_prompt

    _, tokenizer = base
    messages = [{"role": "system", "content": "You are a sales copilot."}]
    for i in range(30):
        role = "user" if i % 2 == 0 else "assistant"
        messages.append({"role": role, "content": f"turn {i} " + "price talk " * 60})
    messages.append({"role": "user", "content": "So what is your best offer?"})

    inputs = _fit_prompt(tokenizer, messages, budget=256)

    text = tokenizer.decode(inputs["input_ids"][0])
    assert inputs["input_ids"].shape[1] <= 256
    assert "You are a sales copilot." in text and "So what is your best offer?" in text
    assert "turn 0 " not in text  # the oldest turns went first

    one_huge = [{"role": "user", "content": "expensive " * 2000 + "final words"}]
    cut = _fit_prompt(tokenizer, one_huge, budget=128)
    assert cut["input_ids"].shape[1] == 128
    assert "final words" in tokenizer.decode(cut["input_ids"][0])
