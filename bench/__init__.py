"""A side-by-side benchmark: this project, bare pika, Celery, Dramatiq (`python -m bench.run`)."""
