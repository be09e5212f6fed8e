"""Taktline."""
