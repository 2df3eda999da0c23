"""The failure lifecycle: classifying errors, retrying with backoff, dead-lettering, replaying."""
