"""Claim checks for paperzoo.diagnostics papers."""
