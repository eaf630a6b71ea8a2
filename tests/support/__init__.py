"""Helpers of the test suite (no fixtures: those live in the conftest.py files).

    servers.py   model folders written the way users write them; the real server, started
    clients.py   clients this project did not write (KServe's, Triton's, httpx), one call each
    hostile.py   broken payloads, bombs and the checks that nothing leaks
    pngs.py      hand-built PNG files
    asgi.py      an ASGI app under a real uvicorn in a thread
    web_app.py   the web backend started as a user starts it
    batching.py  a scripted run_batch for the batcher's tests
"""
