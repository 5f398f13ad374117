"""End-to-end tests that start real Dagster processes (webserver, daemon) on 127.0.0.1."""
