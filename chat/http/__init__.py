"""Everything that knows HTTP: the NDJSON response, who the caller is, the page, the local host.

Only this package and function_app.py import an HTTP framework (starlette, azure.functions);
the pipeline and the providers below it know nothing of requests and responses.
"""
