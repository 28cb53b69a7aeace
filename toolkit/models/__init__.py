"""Built-in models (filled by the zoo plugin)."""
