"""What the tests share: fixtures, rigs, clocks, measurements, a pty terminal, helpers."""
