"""Running the bot: limits and usage, answers in flight across restarts, leases, health,
metrics, logs, traces, the periodic upkeep, and how problems are said."""
