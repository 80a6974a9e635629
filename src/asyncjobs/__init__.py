"""asyncjobs: Kubernetes-native asynchronous LLM inference jobs."""
