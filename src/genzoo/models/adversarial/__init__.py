"""The adversarial family."""
