"""The aiohttp service that answers the Bifrost-compatible async API."""
