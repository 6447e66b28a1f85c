"""The FastAPI prediction service: loads the `champion` model and logs every request."""
