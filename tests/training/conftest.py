"""Shared fixtures: realistic objection/reply pairs and one loaded base model per session.

The pairs are written for these tests (B2B software sales): eight won calls,
plus lost and open calls whose pairs must never become training examples.
"""

from __future__ import annotations

import pytest

from copilot.schemas import Objection
from copilot.settings import Settings, load_settings

# (call id, outcome, objection type, customer, rep)
PAIRS = [
    (
        "won-acme",
        "won",
        "price",
        "Honestly the price is a lot higher than what we pay today.",
        "I understand. Most teams recover the difference within a quarter because reps stop "
        "re-keying orders; can I show you the numbers from a customer your size?",
    ),
    (
        "won-acme",
        "won",
        "competitor",
        "We already have a quote from Salesforce for roughly the same scope.",
        "That makes sense to compare. Where we differ is the offline mobile app and the "
        "German support desk, which you said your field team needs.",
    ),
    (
        "won-acme",
        "won",
        "timing",
        "We can't start anything before the end of the quarter.",
        "That works: we can sign now with a start date on the first of next month, so your "
        "team is not paying for seats it does not use yet.",
    ),
    (
        "won-acme",
        "won",
        "authority",
        "I would need to run this past our CFO before committing.",
        "Of course. Would it help if I prepared a one-page summary with the payback period "
        "for her, and joined the call to answer questions?",
    ),
    (
        "won-acme",
        "won",
        "trust",
        "How do I know the migration won't break our existing data?",
        "We run the migration on a copy first and you sign off on the result before anything "
        "touches production.",
    ),
    (
        "won-birch",
        "won",
        "price",
        "Your annual licence is above the budget we set for tools this year.",
        "Let's look at starting with the twenty seats that drive most of the value and add the "
        "rest at the same rate when the new budget opens.",
    ),
    (
        "won-birch",
        "won",
        "need",
        "I'm not sure we really need another dashboard.",
        "Fair point. The value is less the dashboard and more the alerts that tell a rep which "
        "account to call today; would a two-week pilot show that?",
    ),
    (
        "won-birch",
        "won",
        "contract",
        "A three-year commitment is too long for us.",
        "We can do one year with the option to renew at the same price, so you carry no "
        "long-term risk.",
    ),
    (
        "won-birch",
        "won",
        "timing",
        "Let's revisit this after the trade fair in March.",
        "Happy to. If we set up the pilot now, you will have the fair leads in the system "
        "from day one instead of in spreadsheets.",
    ),
    (
        "won-cedar",
        "won",
        "competitor",
        "HubSpot offered us a bigger discount.",
        "I can't always match discounts, but I can include onboarding and the first year of "
        "premium support, which HubSpot charges extra for.",
    ),
    (
        "won-cedar",
        "won",
        "price",
        "That's more than we expected to spend.",
        "Understood. If we split it into quarterly payments, does that fit the way your "
        "finance team plans?",
    ),
    (
        "won-cedar",
        "won",
        "trust",
        "We had a bad experience with a vendor that disappeared after the sale.",
        "That is a real concern. You will have a named customer success manager and a "
        "quarterly review written into the contract.",
    ),
    (
        "won-cedar",
        "won",
        "authority",
        "Procurement has to approve every new supplier.",
        "No problem. I can send our security questionnaire and supplier documents today so "
        "procurement has everything in one place.",
    ),
    (
        "won-delta",
        "won",
        "need",
        "Our team is small, we manage fine with Excel.",
        "Many of our customers started there. The difference shows when a rep is sick and "
        "nobody else can see which deals are waiting on a reply.",
    ),
    (
        "won-delta",
        "won",
        "price",
        "Can you do better on the price?",
        "I can offer ten percent off if you commit to the annual plan this month; would that "
        "work for you?",
    ),
    (
        "won-delta",
        "won",
        "timing",
        "We're in the middle of a reorganisation right now.",
        "Then let's plan the rollout for after it settles, and I will keep the quoted price "
        "for you until then.",
    ),
    (
        "won-delta",
        "won",
        "contract",
        "We need the right to cancel if it doesn't work out.",
        "We can add a ninety-day exit clause: if adoption targets are not met, you can "
        "cancel without penalty.",
    ),
    (
        "won-elm",
        "won",
        "competitor",
        "Pipedrive is much cheaper than you.",
        "It is cheaper per seat. Our customers pick us for the quoting and ERP integration, "
        "which would otherwise mean a second tool.",
    ),
    (
        "won-elm",
        "won",
        "authority",
        "The final decision is with our managing director.",
        "Makes sense. What matters most to him, cost or time saved? I will tailor the "
        "proposal to that.",
    ),
    (
        "won-elm",
        "won",
        "need",
        "We don't have time to learn a new system.",
        "Setup takes about two hours per rep and we run the training sessions for you, "
        "scheduled around your sales meetings.",
    ),
    (
        "won-elm",
        "won",
        "trust",
        "Where is our data stored?",
        "All data stays in our Frankfurt data centre, encrypted at rest, and we sign a data "
        "processing agreement with you.",
    ),
    (
        "won-fir",
        "won",
        "price",
        "The implementation fee seems steep.",
        "I hear you. If you sign this quarter, we can waive half of the implementation fee "
        "and spread the rest over six months.",
    ),
    (
        "won-fir",
        "won",
        "timing",
        "Send me something and I'll look at it next month.",
        "I will send it today. Can we put twenty minutes in the calendar next month so I can "
        "walk you through it?",
    ),
    (
        "won-fir",
        "won",
        "contract",
        "Your payment terms are too strict for us.",
        "We can move to sixty-day payment terms, which is what most of our industrial "
        "customers use.",
    ),
    (
        "won-fir",
        "won",
        "competitor",
        "Our current provider promised new features next year.",
        "That's worth weighing. Everything I showed you today is available now, and you can "
        "see it running in your own account this week.",
    ),
    (
        "won-gale",
        "won",
        "need",
        "I don't see how this helps our service team.",
        "Service sees every open quote and promise the sales rep made, so customers don't "
        "have to explain their history twice.",
    ),
    (
        "won-gale",
        "won",
        "price",
        "We need a lower monthly cost to get this approved.",
        "We could start on the standard plan at a lower monthly cost and upgrade later, "
        "with the price difference credited.",
    ),
    (
        "won-gale",
        "won",
        "authority",
        "I need to check with my team first.",
        "Of course. Who else should be in the loop? I am happy to run a short demo for the "
        "whole team on Thursday.",
    ),
    (
        "won-gale",
        "won",
        "trust",
        "We've never heard of your company.",
        "That's fair. We work with over three hundred manufacturers in the region; I can "
        "connect you with two of them for a reference call.",
    ),
    (
        "won-hazel",
        "won",
        "timing",
        "This isn't a priority for us this year.",
        "Understood. What would make it a priority? If losing deals to slow quotes is costing "
        "you, waiting a year costs more than starting small now.",
    ),
    (
        "won-hazel",
        "won",
        "price",
        "The per-user price doesn't work for forty people.",
        "For forty users we move you to volume pricing, which brings the per-user price down "
        "by about a fifth.",
    ),
    (
        "won-hazel",
        "won",
        "contract",
        "We can't accept automatic renewal.",
        "No problem, we'll remove the auto-renewal and send you a reminder sixty days before "
        "the term ends.",
    ),
    (
        "won-hazel",
        "won",
        "competitor",
        "Microsoft Dynamics is already part of our licence bundle.",
        "That's a real advantage on paper. The question is setup time: our customers are live "
        "in two weeks, Dynamics projects usually take months.",
    ),
    # Lost and open calls: never training examples.
    (
        "lost-iris",
        "lost",
        "price",
        "It's too expensive.",
        "Well, that's our price, take it or leave it.",
    ),
    ("lost-iris", "lost", "timing", "Call me next year.", "Okay, bye."),
    ("open-juno", "open", "need", "We might not need this at all.", "Hmm, I think you do."),
]


def as_objections(rows: list[tuple], first_index: int = 0) -> list[Objection]:
    """Mined objections from (call id, outcome, type, customer, rep) rows."""
    polarity = {"won": 1, "lost": -1}
    return [
        Objection(
            call_id=call_id,
            turn_index=2 * i,
            type=kind,
            customer_text=customer,
            reply_text=rep,
            start=10.0 * i,
            end=10.0 * i + 8.0,
            outcome=outcome,
            polarity=polarity.get(outcome, 0),
            score=0.9,
            method="lexicon",
        )
        for i, (call_id, outcome, kind, customer, rep) in enumerate(rows, start=first_index)
    ]


def make_objections() -> list[Objection]:
    return as_objections(PAIRS)


# Lost calls for preference pairs and judging: replies that brush the objection off.
# (call id, outcome, objection type, customer, rep)
LOST_PAIRS = [
    (
        "lost-jade",
        "lost",
        "price",
        "Your price is way above the other offers we have.",
        "Prices are going up everywhere, so you will not find it cheaper anywhere else.",
    ),
    (
        "lost-jade",
        "lost",
        "competitor",
        "We're also talking to Salesforce.",
        "Salesforce is far too complicated, everyone knows that.",
    ),
    (
        "lost-jade",
        "lost",
        "timing",
        "We want to wait until next year.",
        "Then you will pay more next year, our prices rise in January.",
    ),
    (
        "lost-jade",
        "lost",
        "authority",
        "My boss has to sign off on this.",
        "Can't you just decide yourself? It's a simple purchase.",
    ),
    (
        "lost-kite",
        "lost",
        "price",
        "The licence costs too much for a team our size.",
        "That's the standard price, we don't do discounts.",
    ),
    (
        "lost-kite",
        "lost",
        "need",
        "I don't think we need a CRM yet.",
        "Every company needs a CRM, trust me on that.",
    ),
    (
        "lost-kite",
        "lost",
        "trust",
        "How do we know you'll still be around in five years?",
        "We've been around a while, you'll just have to trust us.",
    ),
    (
        "lost-kite",
        "lost",
        "contract",
        "We can't sign a two-year contract.",
        "Two years is our minimum term, that's how it works.",
    ),
    (
        "lost-lark",
        "lost",
        "price",
        "This is more than we budgeted for.",
        "Everyone says that, but the price is fair for what you get.",
    ),
    (
        "lost-lark",
        "lost",
        "competitor",
        "Zoho gives us most of this for half the cost.",
        "Zoho is a toy, you get what you pay for.",
    ),
    (
        "lost-lark",
        "lost",
        "timing",
        "Call me back in a few months.",
        "Alright, I'll put a note in my calendar somewhere.",
    ),
    (
        "lost-lark",
        "lost",
        "authority",
        "Our IT department decides on new software.",
        "IT always slows things down, better to go around them.",
    ),
    (
        "lost-lark",
        "lost",
        "trust",
        "Your reviews online are mixed.",
        "You can't believe everything you read on the internet.",
    ),
    (
        "lost-lark",
        "lost",
        "need",
        "Our current spreadsheet works well enough.",
        "Spreadsheets are old-fashioned, nobody uses them anymore.",
    ),
    (
        "lost-lark",
        "lost",
        "contract",
        "We need a shorter notice period.",
        "The notice period is in the standard terms, I can't change it.",
    ),
]


def with_lost_calls() -> list[Objection]:
    """The conftest pairs plus the lost calls above, as mined objections."""
    return make_objections() + as_objections(LOST_PAIRS, first_index=len(PAIRS))


@pytest.fixture(scope="session")
def objections() -> list[Objection]:
    return make_objections()


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    """Settings on a private data dir; a short recipe that fits the 2-core CI machine."""
    base = load_settings(data_dir=tmp_path_factory.mktemp("training-data"))
    return base.with_training(
        {
            "max_steps": 20,
            "batch_size": 4,
            "learning_rate": 5e-4,
            "max_length": 192,
            "log_every": 5,
            "eval_fraction": 0.25,
        }
    )


@pytest.fixture(scope="session")
def base(settings):
    """The base model and tokenizer, loaded (and GGUF-dequantised) once per session."""
    from training.model import load_base

    return load_base(settings)


@pytest.fixture(scope="session")
def tokenizer(base):
    return base[1]


@pytest.fixture(scope="session")
def trained(settings, objections, base):
    """One real 20-step LoRA run shared by the trainer and generator tests.

    Returns the TrainingRun and the (step, loss) pairs its progress callback saw.
    """
    from training.trainer import train_adapter

    seen: list[tuple[int, float]] = []
    run = train_adapter(
        settings,
        objections,
        author="maria",
        progress=lambda step, loss: seen.append((step, loss)),
    )
    return run, seen
