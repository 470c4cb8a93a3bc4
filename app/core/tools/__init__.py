"""Tools the model can call: function tools, the sandboxed python tool, the browser, and the tool loop."""
