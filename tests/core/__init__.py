"""The platform-neutral core (bot/): engine, turn pipeline, model, files, delivery, conversations."""
