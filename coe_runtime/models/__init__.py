"""Base models: where they come from (the Hub, the store, a local path), loading them, and generating or
scoring answers with them."""
