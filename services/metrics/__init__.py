"""metrics: built in its own issue; nothing here yet."""
