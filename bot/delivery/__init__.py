"""Showing an answer: the reply stream (edits, parts, splitting), the shared rate windows, the
answers streaming here and how they stop, answering again in place."""
