"""Command-line front doors. Click commands only: parse, call a layer, render."""
