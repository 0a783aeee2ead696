"""What a run tells people: the terminal summary, and the self-contained HTML page with its SVG plots."""
