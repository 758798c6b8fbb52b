"""Put on ``PYTHONPATH`` of a ``cartoonize-batch`` run by a test, and so of its Ray workers: a
photo whose bytes start with ``POISON`` kills the process that prepares it, at once and with
no exception, as a crash in a native decoder (or the OOM killer) would.

Python imports ``sitecustomize`` as it starts; this one patches
``cartoon.image.pipeline.Preparer.prepare`` when that module is first imported, so a process
that never prepares a photo is untouched.
"""

import importlib.abc
import importlib.util
import os
import sys

POISON = b"POISON"
KILLED_EXIT_CODE = 137  # as SIGKILL leaves it


class _PoisonOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "cartoon.image.pipeline":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        execute = spec.loader.exec_module

        def exec_module(module):
            execute(module)
            prepare = module.Preparer.prepare

            def prepare_or_die(self, data, options):
                if data.startswith(POISON):
                    os._exit(KILLED_EXIT_CODE)
                return prepare(self, data, options)

            module.Preparer.prepare = prepare_or_die

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _PoisonOnImport())
