"""Turning collected scores into metrics, score files and reports."""
