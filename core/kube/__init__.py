"""Kubernetes: the only place that talks to the API server."""
