"""Specs of the Keras applications backbones (ImageNet weights downloaded by Keras on first use)."""
