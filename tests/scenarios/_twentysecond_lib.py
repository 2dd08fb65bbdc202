"""Shared by set 22's files: what a train function leaves for _measure.py to print."""

DIAG: dict = {}
