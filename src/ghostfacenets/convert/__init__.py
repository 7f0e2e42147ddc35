"""Converters from the official Keras files into PyTorch models."""
