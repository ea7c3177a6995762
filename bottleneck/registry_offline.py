"""Specs of backbones whose weights install from the package registry or a local file (no download)."""
