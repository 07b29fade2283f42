"""A pytest plugin (``-p vmshm.formal.mutant_plugin``) that runs the tests on one RTL mutant.

``$VMSHM_MUTANT`` names a JSON file ``{"module": ..., "source": ...}`` (written by
:func:`vmshm.formal.mutate.run_one`): the module is imported from that source instead of its
file, before any test imports it, so every importer sees the mutant. Files stay untouched.
"""

import importlib.abc
import importlib.util
import json
import os
import sys


class _Loader(importlib.abc.Loader):
    def __init__(self, source, origin):
        self.source, self.origin = source, origin

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(compile(self.source, self.origin, "exec"), module.__dict__)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, name, source):
        self.name, self.source = name, source

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        try:
            real = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        return importlib.util.spec_from_loader(fullname, _Loader(self.source, real.origin),
                                               origin=real.origin)


def _install():
    path = os.environ.get("VMSHM_MUTANT")
    if not path:
        return
    spec = json.loads(open(path).read())
    if spec["module"] in sys.modules:
        raise RuntimeError(f"{spec['module']} was imported before the mutant plugin")
    sys.meta_path.insert(0, _Finder(spec["module"], spec["source"]))


_install()
