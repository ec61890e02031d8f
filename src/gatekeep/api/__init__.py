"""The HTTP layer: Starlette routes for clients and admins, and the middleware around them."""
