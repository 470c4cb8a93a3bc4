"""Tools the model can call: function tools, the sandboxed python tool, the browser, and the tool loop.

The window holds a ToolRegistry (registry.py, one per app) and a ToolSession per conversation, and
runs loop.run_tool_loop on a worker thread instead of chat.run_turn. Import the modules themselves:
this package imports nothing, so that the window starting up does not load the browser's HTTP
stack (httpx, lxml), which only a browser call needs.
"""
