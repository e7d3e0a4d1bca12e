"""ctx_memory."""
