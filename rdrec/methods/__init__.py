"""One package per method. A method imports the shared layers (``rdrec.data``, ``rdrec.models``,
``rdrec.modules``, ``rdrec.eval``, ``rdrec.teacher``, ``rdrec.backbones``, ``rdrec.utils``); shared layers never
import a method, and methods never import each other (checked by import-linter, see ``pyproject.toml``).
Adding a method is adding a folder here and a ``conf/strategy/<name>.yaml``: ``docs/adding-a-method.md``."""
