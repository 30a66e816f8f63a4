"""vnnx plugins, shipped as the package ``vnnx_plugins`` (one sub-package per method).

Each plugin exposes a :class:`vnnx.registry.Plugin` named ``PLUGIN`` and is announced in the
``vnnx.plugins`` entry-point group; the core never imports this package.
"""
