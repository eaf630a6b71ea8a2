"""Manifest, schema and deployment-script checks (no cluster needed)."""
