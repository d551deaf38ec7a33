"""The REST API: a FastAPI app, wrapped by Mangum in functions/rest_api/app.py."""
