from tests.meli.test_tokens import *  # noqa
from tests.meli.conftest import *  # noqa

def test_dbg(simulator, aws, make_manager):
    stale = aws.stored_tokens()
    results = _race(2, make_manager, lambda m: m.refresh(CONNECTION_ID, stale))
    import time; time.sleep(0.2)
    print([ (r.method, r.path, r.status) for r in simulator.requests])
    print([repr(r) if isinstance(r, Exception) else r.version for r in results])
    assert False
