#!/usr/bin/env python3
"""BentoML's own Python client against celestial-server, unchanged client code.

usage (in a throwaway venv: python3 -m venv /tmp/bentovenv && /tmp/bentovenv/bin/pip install bentoml==1.4.39):
  /tmp/bentovenv/bin/python bench/bentoml_client.py http://127.0.0.1:3000 IMAGE [IMAGE...]
  BENTO_TOKEN=KEY /tmp/bentovenv/bin/python bench/bentoml_client.py URL IMAGE...   # server with API keys

For each image, prints the client's answer; exits 1 if the client fails or an answer is not the expected
JSON. Also checks that an error answer raises BentoML's exception for that status. With $BENTO_TOKEN (a key of
the server's --api-keys/--api-keys-file), the client is made with `token=` (it sends `Authorization: Bearer`),
and a second client without the token must fail with the server's 401 error."""

import json
import os
import pathlib
import sys

import bentoml

url, images = sys.argv[1], sys.argv[2:]
token = os.environ.get("BENTO_TOKEN") or None
print("bentoml", bentoml.__version__, "token: yes" if token else "token: no")
ok = True
with bentoml.SyncHTTPClient(url, token=token) as client:
    for path in images:
        answer = client.predict(image=pathlib.Path(path))
        body = json.loads(answer) if isinstance(answer, (str, bytes)) else answer
        expected = pathlib.Path(path).parent.name
        good = isinstance(body, dict) and len(body.get("probabilities", {})) == 10
        print(f"{path}: prediction={body.get('prediction')} (folder {expected}) {'ok' if good else 'BAD'}")
        ok &= good
    bad = pathlib.Path("/tmp/celestial-not-an-image.jpg")
    bad.write_bytes(b"this is not an image")
    try:
        client.predict(image=bad)
        print("non-image: no exception (BAD)")
        ok = False
    except Exception as e:  # BentoML raises its own error type chosen by status
        print(f"non-image: {type(e).__name__}: {e}")
if token:
    # The same client code without the token: the server's 401, raised as BentoML's error.
    try:
        with bentoml.SyncHTTPClient(url) as anonymous:
            anonymous.predict(image=pathlib.Path(images[0]))
        print("without the token: no exception (BAD)")
        ok = False
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        print(f"without the token: {text}")
        ok &= "api_key_missing" in text or "401" in text
sys.exit(0 if ok else 1)
