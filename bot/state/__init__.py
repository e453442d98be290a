"""The bot's state: one key module (`keys`), one store interface (`interface`), its Redis
implementation (`redis_store`). See docs/architecture.md, "State and the Redis layout"."""
