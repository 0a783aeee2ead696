"""What a run tells people: the terminal summary, and the self-contained HTML page with its SVG plots."""

from .html import write_html

__all__ = ["write_html"]
