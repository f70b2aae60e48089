"""Yardsticks the benchmarks measure the app against: the SSE line reader main had before issue 11
(line_sse.py), and a typical openai-SDK streaming backend run in the same harness (sdk_app.py)."""
