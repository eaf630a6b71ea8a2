"""Container tests: build the image, run it on 127.0.0.1, check it as a user would."""
