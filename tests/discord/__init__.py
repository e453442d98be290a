"""The Discord adapter against the fake Discord (REST and the gateway), with the real discord.py."""
