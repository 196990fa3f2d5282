"""Subcommands of ``asymrnr-fx`` (see :mod:`asymrnr_fx.cli`)."""
