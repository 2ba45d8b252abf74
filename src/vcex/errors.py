"""Errors vcex raises for bad input: each message names the problem and the fix."""

from __future__ import annotations


class VcexError(ValueError):
    """Base class for every error vcex raises on purpose.

    It subclasses ``ValueError`` so callers that already catch bad-argument errors keep working;
    the CLI prints these as one line instead of a traceback.
    """


class InputError(VcexError):
    """Images, targets or other arguments that do not fit what a function expects."""


class ModelError(VcexError):
    """A model that does not behave as its role requires (wrong output shape, no gradients...)."""


class DatasetNotFoundError(VcexError):
    """A dataset whose files are not on this machine; the message says how to get them."""


class CacheError(VcexError):
    """A cached or user-supplied weights file that cannot be used."""
