"""Development helpers shared by the tests and the scripts (fixture weights, workflow validation).

ComfyUI never imports this package; it lives outside tests/ so that scripts do not import from tests."""
