"""Rebuild the sample call recordings and their JSON sidecars from the scripts below.

Run from the repository root::

    .venv/bin/python data/sample/make_sample.py

Needs ``espeak-ng`` and ``sox`` on the PATH. Each line of a script is spoken by
espeak-ng in its speaker's voice, resampled to 8 kHz (telephone rate) without
dither, trimmed of leading and trailing silence and placed on its party's
channel of a stereo FLAC: the rep on the left, the customer on the right, each
channel silent while the other party talks. The sidecar's turns are the
reference (where each line actually sits in the audio), for evaluation only:
ingest must transcribe the audio, never read the sidecar's text.

Without dither (sox ``-D``) the output is byte-identical for one espeak-ng version (1.51 wrote the files in
this folder); another version may shift the times by a few milliseconds.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

HERE = Path(__file__).resolve().parent
RATE = 8000
GAP_S = 0.45  # pause between two lines
LEAD_S = 0.3  # silence before the first line and after the last
VOICES = {"rep": "en-us", "customer": "en-gb+f3"}  # two clearly different voices
SPEED_WPM = 165
SILENCE = 1e-3  # |sample| below this counts as silence when trimming


@dataclass(frozen=True)
class Call:
    name: str
    outcome: str
    account_id: str
    rep_id: str
    date: str
    lines: list[tuple[str, str]]  # (speaker, text)


CALLS = [
    Call(
        name="sample-call-01",
        outcome="won",
        account_id="ACME-LOGISTICS",
        rep_id="rep-dana",
        date="2025-02-11",
        lines=[
            (
                "rep",
                "Hi Morgan, this is Dana from Northwind Cover, calling about the fleet "
                "insurance quote we sent last week. Do you have a minute?",
            ),
            (
                "customer",
                "Sure. Honestly, the price is too high. It is about fifteen percent "
                "more than we pay now.",
            ),
            (
                "rep",
                "I understand. Our quote includes roadside assistance and a lower "
                "deductible, so one claim saves more than the difference.",
            ),
            ("customer", "Harbor Mutual offered us a cheaper plan, though."),
            (
                "rep",
                "Their plan leaves out rental vehicles. With that cover added, we come "
                "out at about the same price.",
            ),
            ("customer", "That is fair. Send me the contract and we will sign this week."),
            ("rep", "Great, I will email it today. Thank you, Morgan."),
        ],
    ),
    Call(
        name="sample-call-02",
        outcome="lost",
        account_id="BLUE-RIVER-FOODS",
        rep_id="rep-dana",
        date="2025-02-13",
        lines=[
            (
                "rep",
                "Good morning Alex, this is Dana from Northwind Cover. I am following up "
                "on the liability cover for your warehouses.",
            ),
            ("customer", "Thanks, but the timing is bad. Our budget is frozen until next year."),
            ("rep", "I see. We could start with a smaller policy now and extend it at renewal."),
            ("customer", "Even the smaller plan costs more than we can spend right now."),
            ("rep", "Could we set up a call in January to look at it again?"),
            ("customer", "No, thank you. We are not interested at the moment."),
            ("rep", "Understood. Thank you for your time, Alex."),
        ],
    ),
]


def speak(text: str, voice: str, workdir: Path) -> np.ndarray:
    """One line as float32 samples at ``RATE``, without leading or trailing silence."""
    raw, resampled = workdir / "raw.wav", workdir / "line.wav"
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(SPEED_WPM), "-w", str(raw), text], check=True
    )
    subprocess.run(["sox", "-D", str(raw), "-r", str(RATE), "-c", "1", str(resampled)], check=True)
    samples, rate = soundfile.read(resampled, dtype="float32")
    assert rate == RATE
    loud = np.flatnonzero(np.abs(samples) > SILENCE)
    return samples[loud[0] : loud[-1] + 1]


def render(call: Call, workdir: Path) -> dict:
    """Write ``<name>.flac`` and return its sidecar."""
    channel_of = {"rep": 0, "customer": 1}
    pieces, turns = [], []
    clock = LEAD_S
    for speaker, text in call.lines:
        samples = speak(text, VOICES[speaker], workdir)
        start = clock
        clock += len(samples) / RATE
        turns.append(
            {"speaker": speaker, "start": round(start, 2), "end": round(clock, 2), "text": text}
        )
        pieces.append((channel_of[speaker], round(start * RATE), samples))
        clock += GAP_S

    total = round((clock - GAP_S + LEAD_S) * RATE)
    stereo = np.zeros((total, 2), dtype=np.float32)
    for channel, offset, samples in pieces:
        stereo[offset : offset + len(samples), channel] = samples
    soundfile.write(HERE / f"{call.name}.flac", stereo, RATE, subtype="PCM_16")

    return {
        "outcome": call.outcome,
        "account_id": call.account_id,
        "rep_id": call.rep_id,
        "date": call.date,
        "seconds": round(total / RATE, 2),
        "channels": {"left": "rep", "right": "customer"},
        "turns": turns,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for call in CALLS:
            sidecar = render(call, Path(tmp))
            path = HERE / f"{call.name}.json"
            path.write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
            print(f"wrote {call.name}.flac ({sidecar['seconds']} s) and {path.name}")


if __name__ == "__main__":
    main()
