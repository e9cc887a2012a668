"""Synthesis: sampling, latent operations, insertion into mammograms, annotation export."""
