"""The platform-neutral core of the chatbot: settings, model client, store, engine."""
