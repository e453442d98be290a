"""Operations: health, metrics, logs, limits, usage, shutdown, recovery, Redis Cluster,
the deploy files and the image."""
