"""Steps used only by the behaviour tests (loaded with ORCHESTRATOR_STEP_MODULES)."""
