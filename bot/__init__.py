"""The platform-neutral core of the chatbot: settings, model client, store, engine.

`bot.app` (the command line, the service, the checks) is the app layer above both
the core and `adapters`, not part of the core (docs/architecture.md#layers).
"""
