"""vidpipe-dagster: storyboard to identity-consistent video, as a Dagster asset graph."""

__version__ = "0.1.0"
