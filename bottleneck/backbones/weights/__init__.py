"""Readers of foreign weight files, with NumPy only (no torch, no Caffe)."""
