"""The latent family."""
