"""What the tests share: the ``relais`` CLI runner (``cli``), one-off database work and
settings (``db``), waiting for background workers (``waiting``), the running ``relais serve``
app (``serving``), dialogs through the real engine (``dialog``) and seeded people and staff
(``factories``). Fixtures stay in ``tests/conftest.py``."""
