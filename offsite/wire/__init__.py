"""What travels on the queue: task messages checked before use, publishing without Celery, Flower's labels, refusals."""
