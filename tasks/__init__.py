"""The steps: ``escavadores`` (collectors) and ``executadores`` (executors), a module each."""
