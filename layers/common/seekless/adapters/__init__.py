"""Adapters: the real clients behind the ports (DeepSeek over httpx, Redis, DynamoDB)."""
