"""Mutation testing of the rules that protect users (``make mutate``; not part of
``make test``). See ``python -m mutation --help`` and docs/testing.rst."""
