"""Imported by an early child of a validation (tests/validation/test_early_children.py): marks that it was."""
from tests.helpers.early_jobs import mark_imported

mark_imported()
