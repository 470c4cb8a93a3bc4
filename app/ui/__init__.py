"""Harmonica's Qt layer: widgets that show core state and forward user intent."""
