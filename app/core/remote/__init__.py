"""Beyond one machine: models served by other programs (OpenAI-compatible servers) and GPUs pooled over llama.cpp's RPC.

- ``netpolicy``: which hosts a connection may reach (offline mode: loopback and the LAN ranges
  the user allowed).
- ``http``: the hardened HTTP/SSE client every remote request goes through (no redirects, bounded
  headers, lines, events and bodies, cancel by closing the socket, keys never logged).
- ``dialects``: what each kind of server speaks (vLLM, llama-server, Ollama, LM Studio, Harmonica)
  and how its stream becomes harmony pieces for the app's own parser.
- ``probe``: asks a server what it is, which models it serves, their context windows.
- ``engine``: `RemoteEngine`, the engine protocol over HTTP (the scheduler holds it like any other).
- ``connections``: the saved servers and GPU workers (typed settings) and their keys (OS keyring).
- ``rpc``: llama.cpp RPC workers: a safe probe of their devices, registering them with llama.cpp.
- ``pool``: the planner's extra input: placing layers across local and worker devices.
"""
