"""Lets the GPU scripts run where Django is not installed (the lent GPU machines).

The inference package needs Django only for ``gettext_lazy`` in its error messages; without Django
the messages stay in English. Import this before ``describer.inference``.
"""

from __future__ import annotations

import sys
import types


def install() -> None:
    try:
        import django.utils.translation  # noqa: F401
    except ImportError:
        pass
    else:
        return
    packages = {name: types.ModuleType(name) for name in ("django", "django.utils", "django.utils.translation")}
    translation = packages["django.utils.translation"]
    translation.gettext = translation.gettext_lazy = lambda text: text
    packages["django"].utils = packages["django.utils"]
    packages["django.utils"].translation = translation
    sys.modules.update(packages)


install()
