"""OAuth 2.0 (XOAUTH2 / OAUTHBEARER) for SMTP accounts: providers, tokens, the connect flow.

Imports run downwards: :mod:`.providers` knows only settings, :mod:`.tokens` the models
and Authlib, the views the rest. The transport never sees this package: it is handed a
token-provider callable (see :func:`.tokens.token_provider`).
"""
