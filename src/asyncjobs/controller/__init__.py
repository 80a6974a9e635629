"""The kopf operator: thin handlers over the decision code in asyncjobs.core."""
