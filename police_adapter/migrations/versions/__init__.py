"""Migration scripts, applied in order by create_schema."""
