"""Dev mode: everything on one laptop (embedded broker, workers, Flower, a sample feed)."""
