"""The autoregressive family."""
