"""TaskFlow decorators of the Ray provider (``@task.ray``)."""
