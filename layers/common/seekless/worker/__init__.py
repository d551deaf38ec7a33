"""The GPU worker: long-polls the jobs queue and runs each job through the shared chat routine.

``python -m seekless.worker`` runs it (configured from the environment, see ``seekless.config``);
``python -m seekless.worker --health`` is the container HEALTHCHECK. The pieces: ``runner`` (the
queue loop and one job's lifecycle), ``fallback`` (the inference endpoint, then the DeepSeek API),
``health`` (the liveness file). Worker/Dockerfile packages it; template.yaml runs it on ECS.
"""
