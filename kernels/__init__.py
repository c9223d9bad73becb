"""Triton kernels of hybridft, importable only as ``hybridft.kernels``.

The folder sits at the top of the repository (one fused op per file), but it must never be importable as a bare
``kernels`` module: that name belongs to a Hugging Face package that ``transformers`` probes for. Installed, the
folder is mapped to ``hybridft.kernels`` (see ``[tool.setuptools.package-dir]``); in an uninstalled checkout
``hybridft/__init__.py`` mounts it under the same name.
"""

if __name__ != "hybridft.kernels":
    raise ImportError(
        f"this folder is the package 'hybridft.kernels' and cannot be imported as {__name__!r}; "
        "use `import hybridft.kernels` (the bare name 'kernels' belongs to the Hugging Face package)"
    )
