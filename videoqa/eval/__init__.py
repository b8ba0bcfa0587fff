"""Evaluations of the application on benchmark datasets, one subpackage each (today: :mod:`.videomme`)."""
