"""Fine-tuning the objection model: ``dataset`` (won-call SFT examples, split by call),
``model`` (the base model, loaded once), ``trainer`` (LoRA), ``evaluate`` (held-out
response loss), ``registry`` (adapters on disk, promotion) and ``generate`` (serving
the base and adapters in process). Importing the package imports no torch."""
