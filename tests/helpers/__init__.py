"""Helpers the tests import: `from helpers.run import runner`."""
