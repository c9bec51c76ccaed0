"""featurestore package."""
