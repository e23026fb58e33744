"""django-multismtp: send Django mail through many SMTP accounts kept in the database."""

__version__ = "0.1.0"
