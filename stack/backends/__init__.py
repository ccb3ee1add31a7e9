"""Backends make a Deployment real. One per way of running containers."""

from .compose import ComposeBackend

__all__ = ["ComposeBackend"]
