"""ProductCat ML jobs: data ingest and split (and the stages that build on them)."""
