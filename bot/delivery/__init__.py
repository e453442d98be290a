"""delivery: see docs/architecture.md, "Where is X decided?"."""
