"""The worker's web pages beyond health and metrics: the dashboard."""
