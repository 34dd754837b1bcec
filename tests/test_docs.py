"""Every public stub says what it does (help(rx.rx_vmo_create) is a user's first stop)."""

from __future__ import annotations

import inspect

import rxkernel.client as rx


def test_every_public_stub_has_a_docstring() -> None:
    stubs = [name for name in dir(rx) if name.startswith("rx_") and inspect.isfunction(getattr(rx, name))]
    assert len(stubs) > 30
    missing = [name for name in stubs if not inspect.getdoc(getattr(rx, name))]
    assert missing == []


def test_every_public_method_of_the_wrappers_has_a_docstring() -> None:
    classes = [rx.Vmo, rx.Mapping, rx.Mutex, rx.Condition, rx.Semaphore, rx.Event, rx.Barrier]
    missing = []
    for cls in classes:
        for name, member in vars(cls).items():
            if name.startswith("_"):
                continue
            target = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
            if callable(target) and not inspect.getdoc(target):
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []
