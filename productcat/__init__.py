"""`productcat`: the one front door above the layers (ml, api, monitoring)."""
