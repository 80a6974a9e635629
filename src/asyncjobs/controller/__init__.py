"""The operator: thin adapters over the decision code in asyncjobs.core."""
