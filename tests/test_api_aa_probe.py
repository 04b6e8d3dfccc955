import threading, traceback, weakref
import pytest
from django.db.backends.signals import connection_created

RECORDS = []

def _record(sender, connection, **kwargs):
    RECORDS.append((threading.current_thread().name, weakref.ref(connection), "".join(traceback.format_stack(limit=40)[-40:])))

@pytest.fixture(scope="session", autouse=True)
def probe(django_db_setup):
    connection_created.connect(_record)
    yield
    for name, ref, stack in RECORDS:
        conn = ref()
        if conn is not None and conn.connection is not None and not conn.connection.closed:
            print("OPEN CONNECTION in", name, "\n", stack)
