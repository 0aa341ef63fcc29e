"""Domain core of the sales copilot: settings, schemas, the call store and the
objection taxonomy. Importing it never imports torch, gradio or the model stacks."""

__version__ = "0.1.0"
