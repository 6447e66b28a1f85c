"""Tables of the prediction service (request log, feedback, API keys), their engine and their migrations."""
