"""bot.lru: the bounded map every long-lived index uses."""

from __future__ import annotations

from bot.lru import Lru


def test_the_oldest_set_entry_leaves_first_and_setting_again_renews() -> None:
    kept: Lru[str, int] = Lru(2)
    kept["a"] = 1
    kept.put("b", 2)
    kept["a"] = 3  # renewed: "b" is now the oldest
    kept["c"] = 4
    assert list(kept.items()) == [("a", 3), ("c", 4)]
    assert kept.get("b") is None
