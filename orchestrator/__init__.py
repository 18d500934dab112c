"""Jobs over the analysis services: persistent per-video DAGs, fusion, legacy outputs, archive."""
