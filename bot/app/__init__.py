"""The app layer: the command line, the service that runs the adapters, and the checks.

It is the only part that knows both sides: it imports the core (`bot`) and the
platforms (`adapters`); neither of them imports it (docs/architecture.md#layers,
kept by tests/app/test_layers.py).
"""
