"""Harmonica: private, offline chat with gpt-oss models."""

__version__ = "0.1.0"
APP_NAME = "Harmonica"
