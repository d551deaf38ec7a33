"""WebSocket streaming: the frame protocol (docs/WEBSOCKET.md), coalescing, resumable buffers."""
