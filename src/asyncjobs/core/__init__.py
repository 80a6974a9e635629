"""Shared job model, lifecycle, errors, settings and Kubernetes access.

It imports neither the API nor the controller (an import-linter contract).
"""
