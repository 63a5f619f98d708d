"""The last stage: render results (terminal tables, JSON, CSV, HTML)."""
