"""Email backends: ``EmailBackend`` sends; ``test.EmailBackend`` records for test suites."""

from .smtp import EmailBackend

__all__ = ["EmailBackend"]
