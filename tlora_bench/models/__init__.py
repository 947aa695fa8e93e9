"""Model backends and tiny random-weight models for tests."""
