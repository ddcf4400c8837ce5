"""Claim checks for paperzoo.diffusion papers."""
