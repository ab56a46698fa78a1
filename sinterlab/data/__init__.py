"""Descriptor -> image -> info-bar crop -> equalization -> patches -> splits -> DataModule."""
