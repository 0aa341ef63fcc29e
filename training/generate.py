"""In-process generation with the base model and any registered LoRA adapter.

    generator = ReplyGenerator(settings)
    generator.reply("Your price is too high.", references=[...], adapter=registry.resolve(None))

The base loads once; each adapter loads once into one peft model and is then
switched by name. peft's active adapter is state of the whole model, so every
generation holds one lock: requests are served one at a time per process.
``stream`` yields the text as the model writes it, still under that lock; a
``stop`` event ends a generation early (its client went away).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from copilot.errors import InputError
from copilot.prompts import objection_messages
from copilot.settings import Settings
from training.model import base_model_id, load_base
from training.registry import AdapterInfo

logger = logging.getLogger(__name__)

# Small models like to keep the dialogue going by themselves, or to open by echoing
# the prompt's "Customer: ..." line. A label that opens another speaker's turn, at
# the start of a line or after a sentence, marks where the rep's reply ends.
_OTHERS = r"customer|client|prospect|buyer|user|persuadee|kunde|cliente|客户|顾客"
_OWN = r"rep|sales rep|salesperson|seller|agent|assistant|persuader|销售"
_LABEL = re.compile(
    rf"(?:^|(?<=[.!?。！？]))\s*(?P<who>{_OTHERS}|{_OWN})\s*[:：]\s*",
    re.IGNORECASE,
)
_OWN_NAMES = re.compile(rf"^(?:{_OWN})$", re.IGNORECASE)
_ROLES = {"system", "user", "assistant"}


def clean_reply(text: str) -> str:
    """The rep's reply from raw model output.

    A leading rep label ("Rep:") is dropped; leading lines that echo another
    speaker are skipped; the reply ends where another speaker's turn begins, or
    at the first blank line.
    When every line carries another speaker's label, the first line is kept
    without its label.
    """
    kept: list[str] = []
    for line in text.strip().splitlines():
        if not line.strip():
            if kept:
                break  # a spoken reply is one paragraph; after a blank line the model rambles on
            continue
        match = _LABEL.match(line)
        if match and not _OWN_NAMES.match(match["who"]):
            if any(k.strip() for k in kept):
                break
            continue  # an echo of the prompt's customer line before the reply starts
        if match:
            line = line[match.end() :]
        later = next((m for m in _LABEL.finditer(line, 1) if not _OWN_NAMES.match(m["who"])), None)
        if later is not None:
            kept.append(line[: later.start()])
            break
        kept.append(line)
    # The prompt fences reference replies as <<...>>; a model that copies one keeps the fence.
    reply = "\n".join(kept).replace("<<", "").replace(">>", "").strip()
    if not reply:
        # Every line was labelled as another speaker: the model wrote its reply under
        # the wrong label. Its first line, label removed, beats an empty answer.
        first = next((line for line in text.strip().splitlines() if line.strip()), "")
        reply = clean_reply(_LABEL.sub("", first, count=1)) if _LABEL.match(first) else ""
    return reply


def _context_budget(model: Any, max_new_tokens: int) -> int:
    """Prompt tokens that fit beside the reply in the model's context window."""
    window = getattr(model.config, "max_position_embeddings", None) or 2048
    return max(64, window - max_new_tokens)


def _fit_prompt(tokenizer: Any, messages: list[dict[str, str]], budget: int) -> Any:
    """Tokenised prompt within ``budget`` tokens.

    A long conversation loses its oldest turns first (the system message and the
    latest message stay); a single oversized message keeps its end. Without this,
    one request past the context window ties up the generator for minutes.
    """
    messages = _without_special_tokens(tokenizer, messages)
    while True:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        length = inputs["input_ids"].shape[1]
        if length <= budget:
            return inputs
        droppable = [i for i, m in enumerate(messages[:-1]) if m["role"] != "system"]
        if not droppable:
            logger.warning("prompt of %d tokens cut to its last %d", length, budget)
            return {key: value[:, -budget:] for key, value in inputs.items()}
        del messages[droppable[0]]


def _without_special_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """``messages`` with the tokenizer's control tokens removed from their text.

    The rendered prompt is tokenised as one string, so an ``<|im_start|>system`` typed
    into a transcript or a chat message would otherwise become a real role switch.
    """
    specials = sorted(
        (t for t in getattr(tokenizer, "all_special_tokens", []) if t), key=len, reverse=True
    )
    if not specials:
        return list(messages)
    pattern = re.compile("|".join(re.escape(t) for t in specials))
    cleaned = []
    for message in messages:
        content = pattern.sub("", message["content"])
        if content != message["content"]:
            logger.warning("removed control tokens from a %s message", message["role"])
        cleaned.append({**message, "content": content})
    return cleaned


def _stop_when_set(*events: threading.Event | None) -> Any:
    """generate()'s stopping criteria: end at the next token once any of ``events`` is set."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    watched = [e for e in events if e is not None]

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            stop = any(e.is_set() for e in watched)
            return torch.full(
                (input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([StopWhenSet()])


@dataclass
class _Slot:
    """The mutable model state for one base model, shared by every generator in the process."""

    model: Any
    tokenizer: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    peft: Any = None  # the PeftModel wrapping ``model`` in place, once an adapter is loaded
    adapters: dict[str, str] = field(default_factory=dict)  # name -> created_at loaded


_slots: dict[str, _Slot] = {}
_slots_lock = threading.Lock()


class ReplyGenerator:
    """Replies and chat from the base model or an adapter; cheap to create, loads lazily.

    Generators for the same base model share one model and one lock, because
    loading an adapter changes the shared model in place.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.base_model = base_model_id(settings)
        self.last_tokens_per_s: float | None = None

    def _slot(self) -> _Slot:
        with _slots_lock:
            if self.base_model not in _slots:
                # A private copy: loading an adapter wraps the model in place, and
                # the shared load_base() model must stay the plain base for others.
                model, tokenizer = load_base(self.settings, fresh=True)
                _slots[self.base_model] = _Slot(model, tokenizer)
            return _slots[self.base_model]

    def reply(
        self,
        objection: str,
        references: Sequence[str] = (),
        adapter: AdapterInfo | None = None,
        system: str | None = None,
        knowledge: Sequence[str] = (),
    ) -> str:
        """The rep's next reply to ``objection``, with the training prompt format.

        ``system`` and ``knowledge`` come from a prompt-workshop version (None = the default)."""
        if not objection or not objection.strip():
            raise InputError("the objection text is empty; pass what the customer said")
        messages = objection_messages(objection, references, system=system, knowledge=knowledge)
        return clean_reply(self._generate(messages, adapter))

    def chat(
        self,
        messages: list[dict[str, str]],
        adapter: AdapterInfo | None = None,
        stop: threading.Event | None = None,
        max_new_tokens: int | None = None,
    ) -> str:
        """Free chat: ``messages`` are ``{"role": system|user|assistant, "content": str}``.

        Setting ``stop`` ends the generation at the next token (its client went away);
        ``max_new_tokens`` can only lower the configured limit."""
        _check_messages(messages)
        return self._generate(messages, adapter, stop, max_new_tokens).strip()

    def stream(
        self,
        messages: list[dict[str, str]],
        adapter: AdapterInfo | None = None,
        stop: threading.Event | None = None,
        max_new_tokens: int | None = None,
    ) -> Iterator[str]:
        """The raw text of the next message, piece by piece as the model writes it.

        The model stays locked until the iterator ends or is closed (close it when done
        early: ``contextlib.closing``); setting ``stop`` ends the generation at the next
        token. Joined, the pieces are what ``chat`` would return before stripping.
        """
        from transformers import TextIteratorStreamer

        _check_messages(messages)
        self._check_base(adapter)
        slot = self._slot()
        with slot.lock:
            model, inputs, kwargs, off = self._prepare(slot, messages, adapter, max_new_tokens)
            streamer = TextIteratorStreamer(
                slot.tokenizer, skip_prompt=True, skip_special_tokens=True
            )
            halt = threading.Event()  # set when the reader stops early
            failure: list[BaseException] = []

            def run() -> None:
                import torch

                try:
                    with torch.no_grad(), off:
                        model.generate(
                            **inputs,
                            **kwargs,
                            streamer=streamer,
                            stopping_criteria=_stop_when_set(halt, stop),
                        )
                except BaseException as exc:  # re-raised in the reader's thread below
                    failure.append(exc)
                    streamer.end()

            thread = threading.Thread(target=run, name="generate-stream", daemon=True)
            started = time.perf_counter()
            thread.start()
            pieces = 0
            try:
                for piece in streamer:
                    if piece:
                        pieces += 1
                        yield piece
            finally:
                halt.set()
                thread.join()
            logger.debug("streamed %d pieces in %.2f s", pieces, time.perf_counter() - started)
        if failure:
            raise failure[0]

    def _check_base(self, adapter: AdapterInfo | None) -> None:
        if adapter is not None and adapter.base_model != self.base_model:
            raise InputError(
                f"adapter '{adapter.name}' was trained on base model '{adapter.base_model}', "
                f"but the generator runs '{self.base_model}'; train a new adapter on this base, "
                "or set training.base_model / models.generator back to the adapter's base"
            )

    def _prepare(
        self,
        slot: _Slot,
        messages: list[dict[str, str]],
        adapter: AdapterInfo | None,
        max_new_tokens: int | None = None,
    ) -> tuple[Any, Any, dict[str, Any], Any]:
        """The model (adapter active), the prompt, generate()'s options and the context that
        switches adapters off for a base request. The caller holds ``slot.lock``."""
        gen = self.settings.models.generator
        limit = min(max_new_tokens or gen.max_new_tokens, gen.max_new_tokens)
        model = _activate(slot, adapter)
        tokenizer = slot.tokenizer
        inputs = _fit_prompt(tokenizer, messages, _context_budget(model, limit))
        sampling = (
            {"do_sample": True, "temperature": gen.temperature}
            if gen.temperature > 0
            else {"do_sample": False}
        )
        kwargs = {
            "max_new_tokens": limit,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "top_p": None,
            "top_k": None,
            **sampling,
        }
        off = (
            slot.peft.disable_adapter()
            if adapter is None and slot.peft is not None
            else nullcontext()
        )
        return model, inputs, kwargs, off

    def _generate(
        self,
        messages: list[dict[str, str]],
        adapter: AdapterInfo | None,
        stop: threading.Event | None = None,
        max_new_tokens: int | None = None,
    ) -> str:
        import torch

        self._check_base(adapter)
        slot = self._slot()
        with slot.lock:
            model, inputs, kwargs, off = self._prepare(slot, messages, adapter, max_new_tokens)
            tokenizer = slot.tokenizer
            if stop is not None:
                kwargs["stopping_criteria"] = _stop_when_set(stop)
            started = time.perf_counter()
            with torch.no_grad(), off:
                output = model.generate(**inputs, **kwargs)
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            elapsed = time.perf_counter() - started
        self.last_tokens_per_s = len(new_tokens) / elapsed if elapsed > 0 else None
        logger.debug(
            "generated %d tokens in %.2f s with %s",
            len(new_tokens),
            elapsed,
            adapter.name if adapter else "the base model",
        )
        return tokenizer.decode(new_tokens, skip_special_tokens=True)


def _check_messages(messages: list[dict[str, str]]) -> None:
    if not messages:
        raise InputError("chat needs at least one message")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in _ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise InputError(
                f"message {i} must be {{'role': one of {sorted(_ROLES)}, 'content': text}}; "
                f"got {message!r}"
            )


def _activate(slot: _Slot, adapter: AdapterInfo | None) -> Any:
    """The model to generate with, ``adapter`` made active. The caller holds ``slot.lock``."""
    from peft import PeftModel

    if adapter is None:
        return slot.peft if slot.peft is not None else slot.model

    loaded = slot.adapters.get(adapter.name)
    if loaded is not None and loaded != adapter.created_at:
        # Same name, another training run (its folder was replaced): load the new weights.
        slot.peft.delete_adapter(adapter.name)
        del slot.adapters[adapter.name]
        loaded = None
    if loaded is None:
        started = time.perf_counter()
        if slot.peft is None:
            slot.peft = PeftModel.from_pretrained(
                slot.model, adapter.path, adapter_name=adapter.name
            )
            slot.peft.eval()
        else:
            slot.peft.load_adapter(adapter.path, adapter_name=adapter.name)
        slot.adapters[adapter.name] = adapter.created_at
        logger.info("loaded adapter %s in %.2f s", adapter.name, time.perf_counter() - started)
    slot.peft.set_adapter(adapter.name, inference_mode=True)
    return slot.peft
