"""Every public module, class, function and method has a docstring (inherited ones
count, as ``help()`` shows them)."""

import importlib
import inspect
import pkgutil

import refprune


def _public_objects():
    mods = ["refprune"] + [m.name for m in pkgutil.walk_packages(refprune.__path__, "refprune.")
                           if not m.name.endswith("__main__")]
    seen = set()
    for mn in mods:
        mod = importlib.import_module(mn)
        yield mn, mod.__doc__
        for name, obj in vars(mod).items():
            if name.startswith("_") or "mutmut" in name or getattr(obj, "__module__", None) != mn or id(obj) in seen:
                continue  # private, a mutation tool's trampoline, imported, or seen
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            seen.add(id(obj))
            yield f"{mn}.{name}", inspect.getdoc(obj)
            if inspect.isclass(obj):
                for attr, raw in vars(obj).items():
                    if attr.startswith("_") or "mutmut" in attr:  # a mutation tool's trampolines
                        continue
                    if isinstance(raw, property):
                        doc = next((inspect.getdoc(vars(b)[attr].fget) for b in obj.__mro__
                                    if attr in vars(b) and isinstance(vars(b)[attr], property)
                                    and inspect.getdoc(vars(b)[attr].fget)), None)
                    elif callable(getattr(obj, attr)):
                        doc = inspect.getdoc(getattr(obj, attr))
                    else:
                        continue
                    yield f"{mn}.{name}.{attr}", doc


def test_every_public_object_has_a_docstring():
    missing = [name for name, doc in _public_objects() if not (doc or "").strip()]
    assert not missing, f"{len(missing)} public objects without a docstring: {missing}"
