"""Built-in plugins: compression steps and course rulebooks (registered through the hooks)."""
